"""Per-cell statistics: final accuracy per run, mean over seeds with a 95% interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from fpt.schema import analysis_settings

# Settings that can tell two runs of one cell apart, in the order a row label names them.
VARIANT_COLUMNS = (
    "depth", "input_init", "lr", "steps", "batch_size", "patience",
    "precision", "random_init", "backbone_dropout", "lstm_cell",
)  # fmt: skip
DEFAULT_COLLAPSE_MARGIN = analysis_settings()["collapse_margin"]  # the config schema's


@dataclass(frozen=True)
class Cell:
    mean: float
    ci95: float | None  # half-width of the 95% t-interval; None for n = 1
    n: int  # distinct seeds (a cell's runs share every other setting: see `variants`)
    diverged: int  # runs among the n that diverged (non-finite loss)
    collapsed: int = 0  # runs among the n that collapsed to chance (see `collapse_step`)

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        if self.n == 0:
            return "n/a"
        s = f"{self.mean * scale:.{digits}f}"
        s += (
            f" ± {self.ci95 * scale:.{digits}f} (n={self.n})" if self.ci95 is not None else " (n=1)"
        )
        return s + (" †" if self.diverged else "") + (" ‡" if self.collapsed else "")


def cell(
    values: list[float], diverged: list[bool] | None = None, collapsed: list[bool] | None = None
) -> Cell:
    vals = [float(v) for v in values]
    n = len(vals)
    div = sum(bool(d) for d in (diverged or []))
    col = sum(bool(c) for c in (collapsed or []))
    if n == 0:
        return Cell(math.nan, None, 0, 0)
    mean = sum(vals) / n
    if n == 1:
        return Cell(mean, None, 1, div, col)
    sd = pd.Series(vals).std(ddof=1)
    half = float(_st.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return Cell(mean, half, n, div, col)


def cell_of(runs: pd.DataFrame) -> Cell:
    """The Cell of final rows (one per run, as `final_rows` gives them)."""
    collapsed = runs["collapsed"].tolist() if "collapsed" in runs else None
    return cell(runs["accuracy"].tolist(), runs["diverged"].tolist(), collapsed)


def setting_key(run: str) -> str:
    """A run's path without its seed: runs with one key differ in the seed alone."""
    return "/".join(p for p in run.split("/") if not p.startswith("seed="))


def _fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def variants(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows of `df` that a cell may pool, with a `variant` label.

    A cell's runs share every setting except the seed. `keys` name the columns that make
    a cell (e.g. task, backbone, size). Within a cell, only runs of the target's primary
    experiment count: the first experiment of the target's list that has runs there
    (`experiment_rank`, set by targets.load_metrics); runs of other settings that only a
    later experiment holds are left out. Settings that still differ within the primary
    experiment are separate variants, labelled by the settings that tell them apart
    ("lr 0.0003"; "settings <hash>" when none of VARIANT_COLUMNS does), never pooled; a
    cell with one setting has the label ""."""
    if df.empty:
        return df.assign(variant=pd.Series(dtype=str))
    runs = df.drop_duplicates("run").copy()
    runs["_setting"] = runs["run"].map(setting_key)
    runs["_rank"] = runs["experiment_rank"] if "experiment_rank" in runs else 0
    label: dict[str, str] = {}
    for _, g in runs.groupby(keys, dropna=False, sort=False):
        g = g[g["_rank"] == g["_rank"].min()]
        by = g.drop_duplicates("_setting").set_index("_setting")
        cols = [c for c in VARIANT_COLUMNS if c in by and by[c].astype(str).nunique() > 1]
        for run, s in zip(g["run"], g["_setting"], strict=True):
            if len(by) == 1:
                label[run] = ""
            else:
                named = ", ".join(f"{c} {_fmt_value(by.at[s, c])}" for c in cols)
                label[run] = named or f"settings {s.rsplit('=', 1)[-1]}"
    out = df[df["run"].isin(label.keys())].copy()
    out["variant"] = out["run"].map(label)
    return out


def tag(label: pd.Series, variant: pd.Series) -> pd.Series:
    """`label` with each row's variant appended (" [lr 0.0003]"), unchanged where it has none."""
    return label + variant.map(lambda v: f" [{v}]" if v else "")


def collapse_step(
    steps: list[int],
    accuracy: list[float],
    chance: float | None,
    examples: int | None,
    margin: float = DEFAULT_COLLAPSE_MARGIN,
) -> int | None:
    """The step of a collapsed run's last evaluation before its collapse, else None.

    The rule: near chance means accuracy <= chance + band, band = max(margin, 3 binomial
    standard errors of chance on the evaluated examples, 3 sqrt(c (1 - c) / n)); chance is
    the split's most-frequent-label rate (what a constant answer scores). A run collapsed
    when its last two or more evaluations are all near chance and, before them, it had
    learned: some evaluation reached chance + 2 band. Its number is then the evaluation
    just before that final stretch (as the paper reports a diverged run's value before
    divergence). A run that never learned, or that dips and recovers, did not collapse."""
    if chance is None or not np.isfinite(chance) or len(steps) < 3:
        return None
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    s = [steps[i] for i in order]
    a = [accuracy[i] for i in order]
    noise = 3 * math.sqrt(chance * (1 - chance) / examples) if examples else 0.0
    band = max(margin, noise)
    first = len(a)
    while first > 0 and a[first - 1] <= chance + band:
        first -= 1
    if len(a) - first < 2 or first == 0 or max(a[:first]) < chance + 2 * band:
        return None
    return int(s[first - 1])


def final_rows(
    df: pd.DataFrame, split: str = "test", collapse_margin: float = DEFAULT_COLLAPSE_MARGIN
) -> pd.DataFrame:
    """One row per run: its last evaluation on `split` ("test" = the split the paper
    reports for the task, its Task.reported_split) with a finite loss (for a diverged
    run, the value before divergence, as the paper reports it). A run trained with early
    stopping ends with its best-val weights restored: its row is the one at `best_step`.
    A run that collapsed to chance (`collapse_step`) is reported at its evaluation before
    the collapse, with `collapsed` True."""
    finite = pd.Series(np.isfinite(df["loss"].to_numpy(dtype=float)), index=df.index)
    d = reported(df[finite], split)
    if d.empty:
        return d.assign(collapsed=pd.Series(dtype=bool))
    if "best_step" in d:
        best = pd.to_numeric(d["best_step"], errors="coerce")
        early = best.notna()
        d = d[~early | (d["step"] == best)]
    # One pass over the runs on numpy arrays (a pandas group per run cost 0.3-0.7 ms: 3-7 s
    # of a table of 10,000 runs; BENCHMARKS.md, "Pipeline at 10,000 runs").
    step = d["step"].to_numpy()
    check = "chance" in d
    if check:
        accuracy = d["accuracy"].astype(float).to_numpy()
        chance = _floats(d["chance"])
        examples = _floats(d["eval_examples"])
        has_best = d["best_step"].notna().to_numpy() if "best_step" in d else None
    picked, collapsed = [], []
    for _, rows in run_positions(d):
        at = None
        if check and not (has_best is not None and has_best[rows].any()):
            at = collapse_step(
                step[rows].tolist(),
                accuracy[rows].tolist(),
                _max_or_none(chance[rows]),
                None if (n := _max_or_none(examples[rows])) is None else int(n),
                collapse_margin,
            )
        at_rows = rows[step[rows] == at] if at is not None else rows
        picked.append(at_rows[_argmax(step[at_rows])])  # the first row of the last step
        collapsed.append(at is not None)
    return d.loc[d.index[picked]].assign(collapsed=collapsed).reset_index(drop=True)


def run_positions(df: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """Each run of `df` with the positions of its rows, in the order of
    `df.groupby("run", sort=True)` (runs sorted; rows in frame order; no NaN run)."""
    if df.empty:
        return []
    by = df.groupby("run", sort=True)
    codes = by.ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    order = order[codes[order] >= 0]  # a NaN run is in no group, as in groupby
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return list(zip(by.size().index, np.split(order, bounds), strict=True))


def _floats(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _max_or_none(values: np.ndarray) -> float | None:
    """The largest non-NaN value, None when there is none (pandas' max, NaN as None)."""
    values = values[~np.isnan(values)]
    return float(values.max()) if len(values) else None


def _argmax(values: np.ndarray) -> int:
    """The first position of the largest value, NaN skipped (pandas' idxmax)."""
    return int(np.nanargmax(values) if values.dtype.kind == "f" else np.argmax(values))


def reported(df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """The rows of each task's reported split (see final_rows)."""
    from fpt.tasks import reported_split

    if split != "test":
        return df[df["split"] == split]
    codes, tasks = pd.factorize(df["task"])  # once per task, not per row; NaN: code -1
    wanted = np.array([*(reported_split(t, split) for t in tasks), split], dtype=object)
    return df[df["split"].to_numpy() == wanted[codes]]


def noise_tolerance(best: float, examples: int | None, tolerance: float, z: float) -> float:
    """The convergence tolerance for a run: the fixed `tolerance`, widened to `z` binomial
    standard errors of its best accuracy on `examples` test examples where that is larger
    (a 2,000-example ListOps test set at 38% has a standard error of 1.1 points)."""
    if not examples or z <= 0:
        return tolerance
    return max(tolerance, z * math.sqrt(best * (1 - best) / examples))


def steps_to_converge(
    steps: list[int],
    accuracy: list[float],
    tolerance: float,
    examples: int | None = None,
    z: float = 0.0,
) -> int | None:
    """The first evaluation step from which accuracy stays within the run's tolerance
    (`noise_tolerance`: `tolerance`, or `z` standard errors of the best accuracy on
    `examples` test examples if larger) of the run's best accuracy; None for an empty curve.
    Defined on the run's own curve, so a model that plateaus low converges early: read it
    beside the accuracy."""
    if not steps:
        return None
    order = sorted(range(len(steps)), key=lambda i: steps[i])
    s = [steps[i] for i in order]
    a = [accuracy[i] for i in order]
    floor = max(a) - noise_tolerance(max(a), examples, tolerance, z)
    first = len(a) - 1
    while first > 0 and a[first - 1] >= floor:
        first -= 1
    return int(s[first])
