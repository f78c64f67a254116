"""Output layer only (reservoir computing) vs FPT."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext

ROWS = [
    Row(
        "Output layer only",
        {"init": "pretrained", "trainable": "output_only"},
        paper.OUTPUT_ONLY["output_only"],
    ),
    Row("FPT", {"init": "pretrained", "trainable": "fpt"}, paper.OUTPUT_ONLY["fpt"]),
]


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        ROWS,
        title="Output layer only vs FPT",
        note=" Output only: input layer frozen at its random init, only the "
        "output layer trains. The paper reports it on ListOps and C10 LRA.",
        cols=["listops", "cifar10_lra"],
    )
