"""Layer norms frozen (input + output trained) vs trained (FPT)."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext

ROWS = [
    Row(f"{init}: layer norms {state}", {"init": init, "trainable": p}, paper.LAYERNORM[(init, p)])
    for init in ("pretrained", "random")
    for p, state in (("in_out", "frozen"), ("fpt", "trained"))
]


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        ROWS,
        title="Layer norms frozen vs trained",
        note=" Frozen: only input, output and positions train (in_out).",
        cols=["cifar10"],
    )
