"""Successive unfreezing: output only, + layer norms, + input, + positions (FPT)."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext
from fpt.models.freezing import LADDER

ROWS = [
    Row(f"{init}: {name}", {"init": init, "trainable": p}, paper.LADDER.get((init, p), {}))
    for init in ("pretrained", "random")
    for p, name in LADDER.items()
]


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        ROWS,
        title="Successive unfreezing, pretrained vs random",
        note=" Each row trains what the row above trains, plus its addition.",
    )
