"""The look every figure shares: seaborn paper context, colour-blind palette, a paper
column's width, PDF + PNG + the CSV of what is plotted, and a note in place of an empty
panel.

Every figure writes `<name>.csv` beside its pictures: the tidy data it draws, in the
columns the plot uses (panel, x, y, hue, markers), one row per plotted point, or per run
evaluation where seaborn aggregates (mean line, 95% CI), with the run and seed that make
that aggregation reproducible. A figure without data writes the same columns, no rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from fpt import files

COLUMN_WIDTH_IN = 3.25  # one column of a two-column paper
INIT_COLORS = dict(
    zip(
        ["pretrained", "random", "stats", "bit_memory"],
        sns.color_palette("colorblind", 4),
        strict=True,
    )
)


_INTEGER_COLUMNS = ("seed", "step", "total_params", "query_position", "key_position")


def setup() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)


def palette(keys) -> dict:
    keys = sorted(set(keys))
    return dict(zip(keys, sns.color_palette("colorblind", max(len(keys), 1)), strict=False))


def save(fig, out: dict[str, Path], *, data: pd.DataFrame, columns: Sequence[str]) -> None:
    """The figure as PDF and PNG, and `data[columns]` (what it plots) as CSV."""
    # each file whole or not at all (fpt.files); the temporary name has no extension to
    # infer the format from
    files.write_with(out["pdf"], lambda tmp: fig.savefig(tmp, format="pdf", bbox_inches="tight"))
    files.write_with(
        out["png"], lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight", dpi=200)
    )
    plt.close(fig)
    write_data(out, data, columns)


def write_data(out: dict[str, Path], data: pd.DataFrame, columns: Sequence[str]) -> None:
    """`data`'s `columns`, in that order, as the figure's CSV (header only when empty)."""
    if "csv" not in out:
        return
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise KeyError(f"figure data lacks columns {missing}; it has {list(data.columns)}")
    data = data.loc[:, list(columns)]
    # counts stay integers where reference rows (the paper's points) leave them empty
    ints = [c for c in _INTEGER_COLUMNS if c in data and data[c].dtype.kind == "f"]
    data = data.astype({c: "Int64" for c in ints if (data[c].dropna() % 1 == 0).all()})
    files.write_with(out["csv"], lambda tmp: data.to_csv(tmp, index=False))


def empty(out: dict[str, Path], what: str, missing: str, columns: Sequence[str]) -> None:
    """A figure whose experiment the config lacks: one panel saying so, not a missing file;
    its CSV has the figure's columns and no rows."""
    setup()
    fig, ax = plt.subplots(figsize=(COLUMN_WIDTH_IN, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{what}: {missing}", ha="center", va="center", fontsize=9)
    save(fig, out, data=pd.DataFrame(columns=list(columns)), columns=columns)
