"""Unfreezing more of the pretrained backbone than FPT does."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext

NAMES = {
    "fpt": "FPT",
    "fpt_ff": "+ feed-forward",
    "fpt_attn": "+ attention",
    "fpt_ff_attn": "+ feed-forward + attention",
    "fpt_ff_last_attn": "+ feed-forward + last attention layer",
}
ROWS = [
    Row(name, {"init": "pretrained", "trainable": p}, paper.UNFREEZE[p])
    for p, name in NAMES.items()
]


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        ROWS,
        title="Unfreezing more of the pretrained backbone",
    )
