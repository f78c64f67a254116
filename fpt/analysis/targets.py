"""Every table and figure the workflow renders, one `Target` each.

A target's name is its rule name and the stem of its files in `figures_dir`. It reads the
collected metrics of `experiments` (those the config has; the frame is empty when it has
none, and the target still renders, saying "not in <config label>" where it has no data),
plus `extra` inputs: paths relative to `results_dir` computed from the expanded grid (the
attention arrays of the runs a figure shows, the lr selection of a swept experiment).

Each target's code is one module, `fpt.analysis.tables.<x>` or `fpt.analysis.figures.<x>`,
with `build(ctx: BuildContext) -> None`. The Snakefile lists that module's file as an input
of the target's rule, so editing a table or plot reruns exactly that target (mtime trigger)
and never training; shared helpers (style, table model, statistics) are inputs of every
target that imports them.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fpt.schema import analysis_settings

TABLE_EXTS = ("md", "tex", "csv", "html")  # render.Table.write_to
FIGURE_EXTS = ("pdf", "png", "csv")  # figures/style.save: the pictures and what they plot

# Shared modules every target's output depends on (edits rerun all targets).
_ANALYSIS = Path(__file__).parent
SHARED_TABLE_CODE = ("stats.py", "render.py", "paper.py", "compare.py")
SHARED_FIGURE_CODE = ("stats.py", "paper.py", "figures/style.py")


@dataclass
class BuildContext:
    """What a target's build function gets."""

    metrics: pd.DataFrame  # its experiments' rows, with an `experiment` column
    out: dict[str, Path]  # extension -> output path
    extra: list[Path] = field(default_factory=list)  # extra inputs (see Target.extra)
    label: str = "config"  # the config's name: empty cells say f"not in {label}"
    settings: dict[str, Any] = field(default_factory=dict)  # the config's `analysis` block
    caption: str = ""
    # The target's experiments the config has, in precedence order (stats.variants).
    experiments: list[str] = field(default_factory=list)

    @property
    def missing(self) -> str:
        return f"not in {self.label}"

    def __post_init__(self) -> None:
        self.settings = analysis_settings(self.settings)  # the schema's defaults, filled once

    @property
    def collapse_margin(self) -> float:
        return float(self.settings["collapse_margin"])

    def precedence_note(self) -> str:
        """The caption sentence that says which experiment supplies a cell."""
        if len(self.experiments) < 2:
            return ""
        return (
            f"Runs come from the experiments {', '.join(self.experiments)}; where several "
            "hold runs for one cell, the first listed supplies it."
        )


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "table" or "figure"
    experiments: tuple[str, ...]
    caption: str
    module: str  # dotted name of the module with build(ctx)
    extra: Callable[[Any, tuple[str, ...]], list[str]] | None = None  # (grid, experiments) -> paths
    uses: tuple[str, ...] = ()  # more fpt modules whose edits change it (paths under fpt/)

    @property
    def exts(self) -> tuple[str, ...]:
        return TABLE_EXTS if self.kind == "table" else FIGURE_EXTS

    def outputs(self, figures_dir: str | Path) -> dict[str, Path]:
        return {ext: Path(figures_dir) / f"{self.name}.{ext}" for ext in self.exts}

    def code(self) -> list[str]:
        """Source files whose edits rerun this target: its module and the shared helpers."""
        spec = importlib.util.find_spec(self.module)
        assert spec is not None and spec.origin is not None, self.module
        shared = SHARED_TABLE_CODE if self.kind == "table" else SHARED_FIGURE_CODE
        return (
            [spec.origin]
            + [str(_ANALYSIS / s) for s in shared]
            + [str(_ANALYSIS.parent / u) for u in self.uses]
        )

    def extra_inputs(self, grid: Any) -> list[str]:
        present = tuple(e for e in self.experiments if e in grid.experiments)
        return self.extra(grid, present) if self.extra else []


def _selected(grid: Any, experiments: tuple[str, ...]) -> list[str]:
    """The lr selections of the swept experiments among `experiments` (fpt.protocol)."""
    from fpt.protocol import selected_path

    return [selected_path(e) for e in experiments if grid.protocols.get(e) == "swept"]


def _attention_runs(grid: Any, experiments: tuple[str, ...]) -> list[str]:
    from fpt.analysis.attention import attention_path, attention_runs

    return [attention_path(r) for r in attention_runs(grid, experiments)]


def _t(name: str, experiments: tuple[str, ...], caption: str, **kw: Any) -> Target:
    return Target(name, "table", experiments, caption, f"fpt.analysis.tables.{name}", **kw)


def _f(name: str, experiments: tuple[str, ...], caption: str, **kw: Any) -> Target:
    return Target(name, "figure", experiments, caption, f"fpt.analysis.figures.{name}", **kw)


_TARGETS = [
    # ---- tables, in the paper's order --------------------------------------------------
    _t(
        "table1_fpt_vs_full",
        ("table1", "lstm"),
        "Paper Table 1: frozen pretrained transformer (FPT) vs fully trained transformer vs "
        "fully trained LSTM, final test accuracy, ours beside the paper's.",
    ),
    _t(
        "table2_modality",
        ("modality", "table1", "init"),
        "Paper Table 2: frozen 12-layer backbones by pretraining modality (random, Bit Memory, "
        "ImageNet ViT, language), FPT parameter set.",
    ),
    _t(
        "table3_transformer_vs_lstm",
        ("lstm", "table1"),
        "Transformer vs LSTM: fully trained and frozen-random-with-FPT-training, and the LSTM "
        "variants (12 layers, residual connections, positional embeddings).",
    ),
    _t(
        "table4_compute_efficiency",
        ("table1", "modality"),
        "Compute efficiency: training steps until test accuracy converges, frozen pretrained "
        "(FPT) vs frozen random, and the speedup (criterion in the table's caption).",
    ),
    _t(
        "table5_model_size",
        ("sizes",),
        "Model size: FPT accuracy for each backbone size, pretrained vs random, with trainable "
        "and total parameter counts.",
    ),
    _t(
        "table6_initialisation",
        ("init",),
        "Initialisation: pretrained vs statistics-only (per-tensor mean and std) vs default "
        "random, all frozen with the FPT parameter set.",
    ),
    _t(
        "table7_output_only",
        ("output_only",),
        "Output layer only (reservoir-style) vs FPT, pretrained backbone.",
    ),
    _t(
        "table8_depth",
        ("depth",),
        "Depth: only the first k blocks of the backbone, output + layer norms trained "
        "(output_ln) and output only, pretrained vs random.",
    ),
    _t(
        "table9_unfreezing_more",
        ("unfreeze",),
        "Unfreezing more of the pretrained backbone: + feed-forward, + attention, + both, "
        "+ the last attention layer.",
    ),
    _t(
        "table10_successive_unfreezing",
        ("ladder",),
        "Successive unfreezing: output only, + layer norms, + input layer, + positions (= FPT), "
        "pretrained vs random.",
    ),
    _t(
        "table11_layernorm",
        ("layernorm",),
        "Layer norms frozen (input + output trained) vs trained (FPT), pretrained vs random.",
    ),
    _t(
        "table12_other_transformers",
        ("other_transformers",),
        "Other pretrained language transformers as frozen backbones (FPT parameter set).",
    ),
    _t(
        "table13_train_vs_test",
        ("table1", "output_only"),
        "Train vs test accuracy (over/underfitting): FPT vs fully trained transformer.",
    ),
    _t(
        "table14_protocols",
        ("protocol_paper", "protocol_swept"),
        "Two protocols (Rothermel et al.'s comparison): frozen/unfrozen x random/pretrained "
        "under the paper's fixed lr and under a swept, validation-selected lr with early "
        "stopping, beside Lu et al.'s and Rothermel et al.'s published numbers.",
        extra=_selected,
        uses=("protocol.py",),
    ),
    # ---- figures ------------------------------------------------------------------------
    _f(
        "convergence",
        ("table1", "modality"),
        "Test accuracy vs training step per task: frozen pretrained vs frozen random (and fully "
        "trained) backbones; line: mean over seeds, band: 95% CI over seeds.",
    ),
    _f(
        "attention_maps",
        ("table1",),
        "First-layer attention of trained frozen backbones on Bit XOR and Bit Memory (heads and "
        "test examples averaged). Rows: the answer tokens; columns: the positions they attend to; "
        "boxes: the operand positions each answer needs.",
        extra=_attention_runs,
    ),
    _f(
        "model_size_scaling",
        ("sizes",),
        "Test accuracy vs total parameters, pretrained vs random frozen backbones (FPT); "
        "error bars: 95% CI over seeds; dashed: the paper's GPT-2 small/medium/large on CIFAR-10.",
    ),
    _f(
        "train_vs_test",
        ("table1", "output_only"),
        "Final train vs test accuracy per run; the diagonal is no generalisation gap, points "
        "below it overfit.",
    ),
    _f(
        "unfreezing_ladder",
        ("ladder",),
        "Successive unfreezing as bars: output only, + layer norms, + input, + positions (FPT), "
        "pretrained vs random; error bars: 95% CI over seeds; black ticks: the paper's values (GPT-2).",
    ),
    _f(
        "lr_sweep",
        ("protocol_paper", "protocol_swept"),
        "Test accuracy vs learning rate per configuration (each sweep run at its best-val "
        "evaluation; mean over seeds, 95% CI); stars: the lr chosen on val; open diamonds: "
        "the paper's fixed-lr protocol.",
        extra=_selected,
        uses=("protocol.py",),
    ),
]

TARGETS: dict[str, Target] = {t.name: t for t in _TARGETS}

# Snakemake runs local `run:` jobs in threads of one process (force-use-threads in the
# profiles); matplotlib's pyplot state is global, so builds take turns.
_BUILD_LOCK = threading.Lock()


def load_metrics(paths: dict[str, str | Path]) -> pd.DataFrame:
    """Concatenate experiments' collected metrics (experiment -> path, in the target's
    precedence order). A run shared by several experiments (identical specs are one run)
    appears once, tagged with the first, whose place in the order is `experiment_rank`."""
    from fpt.metrics import COLUMNS, read_run

    frames = [
        read_run(p).assign(experiment=e, experiment_rank=i)
        for i, (e, p) in enumerate(paths.items())
    ]
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "experiment", "experiment_rank"])
    df = pd.concat(frames, ignore_index=True)
    return df.drop_duplicates(["run", "step", "split"], keep="first").reset_index(drop=True)


def build(
    name: str,
    metrics: dict[str, str | Path],
    out: dict[str, Path],
    extra: list[str | Path] = (),
    label: str = "config",
    settings: dict[str, Any] | None = None,
) -> None:
    target = TARGETS[name]
    ctx = BuildContext(
        metrics=load_metrics(metrics),
        out={k: Path(v) for k, v in out.items()},
        extra=[Path(p) for p in extra],
        label=label,
        settings=settings or {},
        caption=target.caption,
        experiments=list(metrics),
    )
    for p in ctx.out.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    with _BUILD_LOCK:
        importlib.import_module(target.module).build(ctx)
