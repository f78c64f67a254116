"""Per-cell statistics: final accuracy per run, mean over seeds with a 95% interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st


@dataclass(frozen=True)
class Cell:
    mean: float
    ci95: float | None  # half-width of the 95% t-interval; None for n = 1
    n: int
    diverged: int  # runs among the n that diverged

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        if self.n == 0:
            return "n/a"
        s = f"{self.mean * scale:.{digits}f}"
        s += (
            f" ± {self.ci95 * scale:.{digits}f} (n={self.n})" if self.ci95 is not None else " (n=1)"
        )
        return s + (" †" if self.diverged else "")


def cell(values: list[float], diverged: list[bool] | None = None) -> Cell:
    vals = [float(v) for v in values]
    n = len(vals)
    div = sum(bool(d) for d in (diverged or []))
    if n == 0:
        return Cell(math.nan, None, 0, 0)
    mean = sum(vals) / n
    if n == 1:
        return Cell(mean, None, 1, div)
    sd = pd.Series(vals).std(ddof=1)
    half = float(_st.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return Cell(mean, half, n, div)


def final_rows(df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """One row per run: its last evaluation on `split` ("test" = the split the paper
    reports for the task, see paper.REPORTED_SPLIT) with a finite loss (for a diverged
    run, the value before divergence, as the paper reports it)."""
    from fpt.analysis.paper import REPORTED_SPLIT

    wanted = df["task"].map(lambda t: REPORTED_SPLIT.get(t, split)) if split == "test" else split
    finite = pd.Series(np.isfinite(df["loss"].to_numpy(dtype=float)), index=df.index)
    d = df[(df["split"] == wanted) & finite]
    if d.empty:
        return d
    idx = d.groupby("run")["step"].idxmax()
    return d.loc[idx].reset_index(drop=True)
