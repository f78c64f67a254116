"""Paper Table 1: FPT vs fully trained transformer vs fully trained LSTM."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext

NOT_LSTM = {"backbone": "lstm"}
ROWS = [
    Row("FPT", {"init": "pretrained", "trainable": "fpt"}, paper.TABLE1["FPT"], NOT_LSTM),
    Row(
        "Full Transformer",
        {"init": "random", "trainable": "full"},
        paper.TABLE1["Full Transformer"],
        NOT_LSTM,
    ),
    Row(
        "Full LSTM",
        {"backbone": "lstm", "size": "l3", "trainable": "full"},
        paper.TABLE1["Full LSTM"],
    ),
    Row(
        "Frozen random",
        {"init": "random", "trainable": "fpt"},
        paper.TABLE1["Frozen random"],
        NOT_LSTM,
    ),
]


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        ROWS,
        title="Table 1: FPT vs fully trained transformer vs fully trained LSTM",
        note=f" Paper rows: GPT-2 small; the frozen random row is Table 2's. {paper.SOURCES_NOTE}",
    )
