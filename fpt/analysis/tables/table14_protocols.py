"""The two evaluation protocols side by side, in Rothermel et al.'s comparison: frozen vs
unfrozen, random vs pretrained, on ListOps, MNIST, CIFAR-10 and C10 LRA (plus any other task
the config runs). Ours under the paper's fixed lr (experiment `protocol_paper`, final test
accuracy) next to ours under a swept, validation-selected lr (`protocol_swept`: the chosen
run's test accuracy, from the experiment's selected.parquet, fpt/protocol.py), then the
published numbers of Lu et al. (fixed lr) and Rothermel et al. (swept)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fpt.analysis import paper
from fpt.analysis.compare import columns_with_extras, fmt_paper
from fpt.analysis.render import Table
from fpt.analysis.stats import Cell, cell, cell_of, final_rows, variants
from fpt.analysis.targets import BuildContext
from fpt.protocol import SELECTION_COLUMNS, read_selected
from fpt.tasks import task_label

PAPER_EXPERIMENT, SWEPT_EXPERIMENT = "protocol_paper", "protocol_swept"
TASKS = ["listops", "mnist", "cifar10", "cifar10_lra"]

# (label, init, trainable), in Rothermel et al.'s order.
MODELS = [
    ("frozen random", "random", "fpt"),
    ("frozen pretrained", "pretrained", "fpt"),
    ("unfrozen random", "random", "full"),
    ("unfrozen pretrained", "pretrained", "full"),
]


def _tasks(*values: float | str) -> dict[str, float | str]:
    return dict(zip(TASKS, values, strict=True))


# Lu et al. (arXiv 2103.05247 v2), GPT-2 small, lr 1e-3 (fpt.analysis.paper). Frozen random:
# Table 2's Random row; unfrozen random: Table 1's fully trained transformer; unfrozen
# pretrained: the unfreezing table's "+ feed-forward + attention" row (every weight trains).
LU = {
    "frozen random": {t: paper.RANDOM_FROZEN[t] for t in TASKS},
    "frozen pretrained": {t: paper.FPT[t] for t in TASKS},
    "unfrozen random": {t: paper.TABLE1["Full Transformer"][t] for t in TASKS},
    "unfrozen pretrained": {t: paper.UNFREEZE["fpt_ff_attn"][t] for t in TASKS},
}
# Rothermel et al., "Don't Sweep your Learning Rate under the Rug" (arXiv 2107.12460), GPT-2
# base, lr swept 1e-6..1e-2, 3 seeds, val split, early stopping (the known criticism of the
# paper's fixed-lr protocol). Its unfrozen pretrained row is not confirmed against the PDF: marked (?).
ROTHERMEL = {
    "frozen random": _tasks(38.9, 98.0, 61.8, 44.2),
    "frozen pretrained": _tasks(46.1, 98.5, 66.3, 54.7),
    "unfrozen random": _tasks(57.6, 98.7, 77.8, 62.0),
    "unfrozen pretrained": _tasks("56.3 (?)", "99.0 (?)", "77.7 (?)", "67.8 (?)"),
}

HEADER = [
    "Task",
    "Model",
    "Backbone",
    "fixed lr (ours)",
    "swept lr (ours)",
    "lr chosen",
    "Lu et al. (fixed)",
    "Rothermel et al. (swept)",
]
CAPTION = (
    "Two evaluation protocols on the same configs. Fixed lr (the paper's protocol): lr 1e-3 "
    "for the whole step budget, test accuracy at the final evaluation. Swept lr: each config "
    "trained at every lr of the sweep with early stopping on the val split (best weights "
    "restored); per config and seed the lr with the best val accuracy is chosen (ties: lower "
    "val loss, then the smaller lr) and only that run's test accuracy is reported. Cells: test "
    "accuracy (%), mean over seeds ± 95% t-interval (n = seeds), or the single value (n=1); "
    "† marks a cell with a run that diverged. 'lr chosen': the chosen lrs with how many seeds "
    "chose each. Frozen = the FPT parameter set trains (input, output, layer norms, "
    "positions); unfrozen = every weight trains. Lu et al.: GPT-2 small; their unfrozen "
    "pretrained row is the '+ feed-forward + attention' unfreezing ablation, * = diverged "
    "there (value before divergence); their unfrozen random ListOps and C10 LRA numbers are "
    "quoted from LRA and CIFAR-10 is a 3-layer model. Rothermel et al.: GPT-2 base, lr swept "
    "1e-6..1e-2; (?) = not confirmed against the PDF."
)


def _paper_finals(ctx: BuildContext) -> pd.DataFrame:
    """protocol_paper's final rows; runs of other settings than the seed are variants."""
    m = ctx.metrics
    m = m[m["experiment"] == PAPER_EXPERIMENT] if len(m) else m
    finals = final_rows(m, "test", ctx.collapse_margin)
    return variants(finals, ["task", "init", "trainable", "backbone", "size"])


def _swept_chosen(ctx: BuildContext) -> pd.DataFrame:
    frames = [read_selected(p) for p in ctx.extra if p.name == "selected.parquet"]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=SELECTION_COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    return df[df["chosen"].astype(bool)]


def _published(v: float | str | None) -> str:
    """Rothermel et al.'s numbers as published, one decimal."""
    return "—" if v is None else v if isinstance(v, str) else f"{v:.1f}"


def _lrs(lrs: list[float]) -> str:
    counts = pd.Series(lrs).value_counts().sort_index()
    return ", ".join(f"{lr:g}" if len(counts) == 1 else f"{lr:g} ({n})" for lr, n in counts.items())


def _where(df: pd.DataFrame, **values: Any) -> pd.DataFrame:
    ok = pd.Series(True, index=df.index)
    for col, v in values.items():
        ok &= df[col] == v
    return df[ok]


def _backbones(fixed: pd.DataFrame, swept: pd.DataFrame) -> list[tuple[Any, Any, str]]:
    """The (backbone, size, variant) keys with runs in either frame, or one placeholder."""
    keys = {tuple(k) for k in fixed[["backbone", "size", "variant"]].itertuples(index=False)}
    keys |= {(*k, "") for k in swept[["backbone", "size"]].itertuples(index=False)}
    return sorted(keys, key=str) or [(None, None, "")]


def build(ctx: BuildContext) -> None:
    fixed, swept = _paper_finals(ctx), _swept_chosen(ctx)
    tasks = columns_with_extras(TASKS, [*fixed["task"], *swept["task"]])
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for task in tasks:
        for label, init, trainable in MODELS:
            key = {"task": task, "init": init, "trainable": trainable}
            f, s = _where(fixed, **key), _where(swept, **key)
            lu, ro = LU[label].get(task), ROTHERMEL[label].get(task)
            for backbone, size, variant in _backbones(f, s):
                fb = _where(f, backbone=backbone, size=size, variant=variant)
                sb = _where(s, backbone=backbone, size=size) if not variant else s.iloc[0:0]
                fc = cell_of(fb)
                sc = cell(sb["test_accuracy"].tolist(), sb["diverged"].tolist())
                lrs = sb["lr"].astype(float).tolist()
                rows.append(
                    [
                        task_label(task),
                        label,
                        (f"{backbone} {size}" if backbone else "—")
                        + (f" [{variant}]" if variant else ""),
                        fc.fmt() if fc.n else ctx.missing,
                        sc.fmt() if sc.n else ctx.missing,
                        _lrs(lrs) if lrs else "—",
                        fmt_paper(lu),
                        _published(ro),
                    ]
                )
                common = {**key, "model": label, "backbone": backbone, "size": size}
                fixed_lrs = ";".join(sorted({f"{x:g}" for x in fb["lr"]}))
                swept_lrs = ";".join(f"{x:g}" for x in lrs)
                data += [
                    _record(common, "paper", fc, fixed_lrs, lu, "Lu et al. 2021"),
                    _record(common, "swept", sc, swept_lrs, ro, "Rothermel et al. 2021"),
                ]
    Table(
        "Two protocols: the paper's fixed learning rate vs a swept, validation-selected one",
        CAPTION,
        HEADER,
        rows,
        pd.DataFrame(data),
    ).write_to(ctx.out)


def _record(
    common: dict[str, Any], protocol: str, c: Cell, lrs: str, published, source: str
) -> dict[str, Any]:
    return {
        **common,
        "protocol": protocol,
        "accuracy_mean": c.mean,
        "ci95": c.ci95,
        "n": c.n,
        "diverged": c.diverged,
        "lrs": lrs,
        "published": published,
        "published_source": source,
    }
