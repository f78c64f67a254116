"""The look every figure shares: seaborn paper context, colour-blind palette, a paper
column's width, PDF + PNG, and a note in place of an empty panel."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

COLUMN_WIDTH_IN = 3.25  # one column of a two-column paper
INIT_COLORS = dict(
    zip(
        ["pretrained", "random", "stats", "bit_memory"],
        sns.color_palette("colorblind", 4),
        strict=True,
    )
)


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)


def palette(keys) -> dict:
    keys = sorted(set(keys))
    return dict(zip(keys, sns.color_palette("colorblind", max(len(keys), 1)), strict=False))


def save(fig, out: dict[str, Path]) -> None:
    Path(out["pdf"]).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out["pdf"], bbox_inches="tight")
    fig.savefig(out["png"], bbox_inches="tight", dpi=200)
    plt.close(fig)


def empty(out: dict[str, Path], what: str, missing: str) -> None:
    """A figure whose experiment the config lacks: one panel saying so, not a missing file."""
    setup()
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{what}: {missing}", ha="center", va="center", fontsize=9)
    save(fig, out)
