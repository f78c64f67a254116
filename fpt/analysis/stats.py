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
    run, the value before divergence, as the paper reports it). A run trained with early
    stopping ends with its best-val weights restored: its row is the one at `best_step`."""
    finite = pd.Series(np.isfinite(df["loss"].to_numpy(dtype=float)), index=df.index)
    d = reported(df[finite], split)
    if d.empty:
        return d
    if "best_step" in d:
        best = pd.to_numeric(d["best_step"], errors="coerce")
        d = d[best.isna() | (d["step"] == best)]
    idx = d.groupby("run")["step"].idxmax()
    return d.loc[idx].reset_index(drop=True)


def reported(df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The rows of each task's reported split (see final_rows)."""
    from fpt.analysis.paper import REPORTED_SPLIT

    wanted = df["task"].map(lambda t: REPORTED_SPLIT.get(t, split)) if split == "test" else split
    return df[df["split"] == wanted]


def steps_to_converge(steps: list[int], accuracy: list[float], tolerance: float) -> int | None:
    """The first evaluation step from which accuracy stays within `tolerance` (absolute,
    fraction) of the run's best accuracy; None for an empty curve. Defined on the run's own
    curve, so a model that plateaus low converges early: read it beside the accuracy."""
    if not steps:
        return None
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    s = [steps[i] for i in order]
    a = [accuracy[i] for i in order]
    floor = max(a) - tolerance
    first = len(a) - 1
    while first > 0 and a[first - 1] >= floor:
        first -= 1
    return int(s[first])
