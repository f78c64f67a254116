"""Initialisation: pretrained vs statistics only vs default random, all FPT."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext

ROWS = [
    Row("Pretrained", {"init": "pretrained", "trainable": "fpt"}, paper.INIT["pretrained"]),
    Row("Statistics only", {"init": "stats", "trainable": "fpt"}, paper.INIT["stats"]),
    Row("Default random", {"init": "random", "trainable": "fpt"}, paper.INIT["random"]),
]


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        ROWS,
        title="Initialisation of the frozen backbone",
        note=" Statistics only: each pretrained tensor redrawn from a normal with its mean and std.",
    )
