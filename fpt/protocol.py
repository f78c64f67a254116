"""Evaluation protocols: the paper's fixed learning rate, and a swept, validation-selected one.

One place for the protocol logic, imported by fpt.grid (expansion), the Snakemake rules
(workflow/rules/select.smk) and the tests.

- `paper` (default): each grid point is one run at its configured lr (1e-3 for transformers,
  as the paper), trained for the full step budget; tables report the final test accuracy.
- `swept` (Rothermel et al., arXiv 2107.12460): each grid point is trained once per lr of
  `sweep.lrs`, each with early stopping on val accuracy (`sweep.patience` evaluations, best
  weights restored). Per config (every axis but lr, seed included) the lr whose run reached
  the best val accuracy is chosen, and only that run's test accuracy is reported.

Selection rule (`choose`), deterministic: highest val accuracy, then lowest val loss, then
the smaller lr. A run's candidate evaluation is the one whose weights it ended with: its
`best_step` under early stopping, else its last finite evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

PROTOCOLS = ("paper", "swept")
# 1e-5 .. 1e-2 in half-decades, the half steps rounded to 3e-k (10^-4.5 = 3.16e-5): round
# numbers in run paths, and 3e-4 is the paper's own LSTM lr.
DEFAULT_LRS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DEFAULT_PATIENCE = 10  # evaluations without a new best val accuracy

# Axes that identify a config: everything but lr (seed included: selection is per seed).
CONFIG_AXES = ("task", "backbone", "size", "init", "trainable", "depth", "input_init", "seed")

# One row per candidate (lr) in a selection file.
SELECTION_COLUMNS = [
    "experiment",
    "config",
    *CONFIG_AXES,
    "settings",
    "lr",
    "run",
    "step",
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "best_step",
    "stop_step",
    "patience",
    "diverged",
    "rank",
    "chosen",
]


@dataclass(frozen=True)
class Sweep:
    lrs: tuple[float, ...]
    patience: int


def protocol_of(experiment: dict[str, Any]) -> str:
    return experiment.get("protocol", "paper")


def sweep_of(experiment: dict[str, Any], where: str = "experiment") -> Sweep | None:
    """The experiment's sweep (defaults filled), or None under protocol paper. Raises
    ValueError naming the key when the experiment's protocol keys contradict each other."""
    protocol = protocol_of(experiment)
    if protocol not in PROTOCOLS:
        raise ValueError(f"{where}.protocol: {protocol!r}. Allowed values: {', '.join(PROTOCOLS)}.")
    if protocol == "paper":
        if "sweep" in experiment:
            raise ValueError(
                f"{where}.sweep is set but protocol is 'paper' (one fixed lr). Fix: add "
                "`protocol: swept`, or remove `sweep`."
            )
        return None
    grid = experiment["grid"]
    if any("lr" in g for g in (grid if isinstance(grid, list) else [grid])):
        raise ValueError(
            f"{where}.grid lists `lr`, but protocol 'swept' sweeps the learning rate itself. "
            "Fix: remove `lr` from the grid and set `sweep: {lrs: [...]}` instead."
        )
    sweep = experiment.get("sweep", {})
    lrs = tuple(sorted(float(x) for x in sweep.get("lrs", DEFAULT_LRS)))
    return Sweep(lrs=lrs, patience=int(sweep.get("patience", DEFAULT_PATIENCE)))


def sweep_points(points: list[dict[str, Any]], sweep: Sweep | None) -> list[dict[str, Any]]:
    """Grid points of an experiment under its protocol: under `swept`, each point once per lr,
    with early stopping on (the grid point is the most specific settings layer)."""
    if sweep is None:
        return points
    return [{**p, "lr": lr, "patience": sweep.patience} for p in points for lr in sweep.lrs]


def config_key(run_path: str) -> str:
    """A run's config: its hive path without the `lr=` folder (the settings hash does not
    depend on lr), e.g. task=bit_xor/.../input_init=orthogonal/seed=0/settings=1a2b3c4d."""
    return "/".join(p for p in run_path.split("/") if not p.startswith("lr="))


def selection_path(experiment: str, config: str) -> str:
    """A config's selection file, relative to results_dir."""
    return f"experiments/{experiment}/selections/{config}/selection.parquet"


def selected_path(experiment: str) -> str:
    """An experiment's selections, all configs, relative to results_dir."""
    return f"experiments/{experiment}/selected.parquet"


# ---- selection: pure functions on metric rows -------------------------------------------


def candidate(run: pd.DataFrame, test_split: str = "test") -> dict[str, Any]:
    """One run's candidate: the evaluation whose weights the run ended with (its best_step
    under early stopping, else its last evaluation with a finite loss), val and test."""
    finite = run[run["loss"].map(lambda v: math.isfinite(float(v)))]
    best = run["best_step"].dropna() if "best_step" in run else pd.Series(dtype=float)
    evals = finite[finite["split"] == "val"]
    if not best.empty:
        step = int(best.iloc[0])
    elif not evals.empty:
        step = int(evals["step"].max())
    else:
        step = None
    at = finite[finite["step"] == step] if step is not None else finite.iloc[0:0]

    def value(split: str, col: str) -> float:
        v = at.loc[at["split"] == split, col]
        return float(v.iloc[0]) if len(v) else math.nan

    first = run.iloc[0]
    return {
        **{a: first[a] for a in CONFIG_AXES},
        "settings": first["settings"],
        "lr": float(first["lr"]),
        "run": first["run"],
        "step": step,
        "val_accuracy": value("val", "accuracy"),
        "val_loss": value("val", "loss"),
        "test_accuracy": value(test_split, "accuracy"),
        "test_loss": value(test_split, "loss"),
        "best_step": None if best.empty else int(best.iloc[0]),
        "stop_step": int(first["stop_step"]) if pd.notna(first.get("stop_step")) else None,
        "patience": int(first["patience"]) if pd.notna(first.get("patience")) else 0,
        "diverged": bool(first["diverged"]),
    }


def _sort_key(c: dict[str, Any]) -> tuple[float, float, float]:
    # NaN (no finite evaluation) ranks last on each criterion
    acc, loss = c["val_accuracy"], c["val_loss"]
    return (
        -acc if math.isfinite(acc) else math.inf,
        loss if math.isfinite(loss) else math.inf,
        c["lr"],
    )


def choose(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rank one config's candidates: highest val accuracy, then lowest val loss, then the
    smaller lr. Returns them in rank order with `rank` (0 = chosen) and `chosen` set."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    ranked = sorted(candidates, key=_sort_key)
    return [{**c, "rank": i, "chosen": i == 0} for i, c in enumerate(ranked)]


def select(metrics: pd.DataFrame, experiment: str = "", config: str = "") -> pd.DataFrame:
    """One config's selection from its runs' metric rows (one run per lr): every candidate
    with its rank, the chosen one first."""
    runs = [candidate(g) for _, g in metrics.groupby("run", sort=True)]
    lrs = [c["lr"] for c in runs]
    if len(set(lrs)) != len(lrs):
        raise ValueError(f"{config or 'selection'}: several runs share an lr: {sorted(lrs)}")
    keys = {tuple(str(c[a]) for a in CONFIG_AXES) + (c["settings"],) for c in runs}
    if len(keys) != 1:
        raise ValueError(f"{config or 'selection'}: runs of different configs: {sorted(keys)}")
    rows = [{"experiment": experiment, "config": config, **c} for c in choose(runs)]
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)


def write_selection(
    run_files: Iterable[str | Path], out: str | Path, experiment: str, config: str
) -> pd.DataFrame:
    """Read one config's run metrics, select, write `out` atomically; returns the selection."""
    from fpt.metrics import read_run

    metrics = pd.concat([read_run(f) for f in run_files], ignore_index=True)
    sel = select(metrics, experiment, config)
    _write(sel, out)
    return sel


def write_selected(selection_files: Iterable[str | Path], out: str | Path) -> pd.DataFrame:
    """Concatenate an experiment's selection files into `out` (every candidate, `chosen`
    marking the reported run of each config)."""
    frames = [pd.read_parquet(f) for f in selection_files]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SELECTION_COLUMNS)
    _write(df, out)
    return df


def _write(df: pd.DataFrame, out: str | Path) -> None:
    import pyarrow as pa

    from fpt.metrics import write_atomic

    df = df.astype({"best_step": "Int64", "stop_step": "Int64", "step": "Int64"})
    write_atomic(pa.Table.from_pandas(df, preserve_index=False), out)


def read_selected(path: str | Path) -> pd.DataFrame:
    """An experiment's selections (see write_selected)."""
    df = pd.read_parquet(path)
    missing = set(SELECTION_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(
            f"{path} lacks selection columns {sorted(missing)}. Fix: delete it so the workflow "
            "rewrites it with this fpt."
        )
    return df
