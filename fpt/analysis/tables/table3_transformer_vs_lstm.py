"""Transformer vs LSTM: trained fully and frozen random (FPT-style training), and the
LSTM variants the paper ablates (12 layers, residual connections, positional embeddings)."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext

LSTM_SIZES = {
    "l3": "3-layer LSTM",
    "l12": "12-layer LSTM",
    "l12_res": "12-layer LSTM + residual",
    "l12_res_pos": "12-layer LSTM + residual + positions",
}
ROWS = [
    Row(
        "Transformer, fully trained",
        {"init": "random", "trainable": "full"},
        paper.TABLE1["Full Transformer"],
        {"backbone": "lstm"},
    ),
    Row(
        "Transformer, frozen random",
        {"init": "random", "trainable": "fpt"},
        paper.TABLE1["Frozen random"],
        {"backbone": "lstm"},
    ),
]
for size, name in LSTM_SIZES.items():
    ROWS.append(
        Row(
            f"{name}, fully trained",
            {"backbone": "lstm", "size": size, "trainable": "full"},
            paper.TABLE1["Full LSTM"] if size == "l3" else {},
        )
    )
    ROWS.append(
        Row(f"{name}, frozen random", {"backbone": "lstm", "size": size, "trainable": "fpt"})
    )


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        ROWS,
        title="Transformer vs LSTM",
        note=" The paper gives LSTM numbers only for the fully trained 3-layer LSTM "
        "(its Table 1); the variants' cells show ours alone. LSTM lr 3e-4 as in the paper. "
        + paper.SOURCES_NOTE,
    )
