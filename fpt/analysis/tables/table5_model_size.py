"""Model size: FPT accuracy per backbone size, pretrained vs random, with parameter counts."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, select, write_compare
from fpt.analysis.stats import final_rows
from fpt.analysis.targets import BuildContext
from fpt.models.reach import PAPER_CIFAR10_FPT_PARAMS

PAPER_SIZES = ("small", "medium", "large")


def rows_for(df) -> list[Row]:
    """A row per (backbone, size) the runs have, and per GPT-2 size the paper reports."""
    finals = final_rows(select(df, {"trainable": "fpt"}))
    models = set(zip(finals["backbone"], finals["size"], strict=True)) if len(finals) else set()
    models |= {("gpt2", s) for s in PAPER_SIZES}
    order = {s: i for i, s in enumerate(PAPER_SIZES)}
    rows = []
    for backbone, size in sorted(models, key=lambda m: (m[0], order.get(m[1], 9), m[1])):
        for init in ("pretrained", "random"):
            ref = paper.SIZES[init].get(size) if backbone == "gpt2" else None
            count = PAPER_CIFAR10_FPT_PARAMS.get(size) if backbone == "gpt2" else None
            rows.append(
                Row(
                    f"{backbone} {size}, {init}",
                    {"backbone": backbone, "size": size, "init": init, "trainable": "fpt"},
                    {"cifar10": ref} if ref is not None else {},
                    paper_params=f"~{count // 1000}K" if count else None,
                )
            )
    return rows


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        rows_for(ctx.metrics),
        title="Model size",
        note=" Parameter counts per run (a range where tasks' heads differ): trainable (the "
        "FPT set), reachable (the trainable ones that can receive a gradient: position rows "
        "beyond the task's length cannot) and total; trainable (paper): the paper's count for "
        "FPT on CIFAR-10, which `fpt describe` reproduces under its counting convention "
        "(fpt/models/reach.py). Paper accuracies: GPT-2 on CIFAR-10.",
        cols=["cifar10"],
        params=True,
    )
