"""Table and figure rendering at scale: `fpt bench-tables --runs N`.

For each target timed, a synthetic config whose experiments (the target's own, as the
workflow's rule reads them) hold exactly N runs (fpt.bench.pipeline.scaled_config), their
metrics as the collect rule writes them (one Parquet per experiment, fpt.metrics schema:
`evals` evaluations x (train + the task's eval splits) per run, plausible learning curves,
a few diverged and collapsed runs), then `fpt.analysis.targets.build` timed on them:
exactly what the target's Snakemake job runs (its module imported first and timed apart:
Snakemake runs local jobs in threads of one process, which imports it once).
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fpt.bench.pipeline import cpu_model, scaled_config
from fpt.metrics import SCHEMA_VERSION, to_table, write_atomic
from fpt.spec import RunSpec

# Tables through compare.write_compare (1, 2), through their own loops over runs (4, 13) and a
# figure that plots every evaluation of every run (convergence).
TARGETS = (
    "table1_fpt_vs_full",
    "table2_modality",
    "table4_compute_efficiency",
    "table13_train_vs_test",
    "convergence",
)
CHANCE = 0.5  # every eval split's most-frequent-label rate, in these synthetic runs
EVAL_EXAMPLES = 1000
PROVENANCE = (  # fpt.metrics.provenance's columns but schema_version
    "device", "device_name", "torch_version", "transformers_version", "fpt_version",
    "python_version", "git_rev",
)  # fmt: skip


def _splits(spec: RunSpec) -> tuple[str, ...]:
    """The splits a run of `spec` evaluates: train, then its task's eval splits (no val where
    the task's options hold none out), as fpt.train writes them."""
    from fpt.tasks import TASKS

    cls = TASKS[spec.task]
    return ("train", *(s for s in cls.eval_splits if s != "val" or cls.has_val(spec.options)))


def synthetic_metrics(specs: Sequence[RunSpec], evals: int = 11, seed: int = 0) -> pd.DataFrame:
    """Metrics rows of `specs` (one frame, fpt.metrics columns, each run's rows together in
    the order of `specs`): each run evaluated `evals` times (step 0 without a train row),
    accuracy rising from chance to a per-run plateau; about 1 % of runs diverge (non-finite
    loss over their last evaluations) and 1 % collapse back to chance after learning
    (fpt.analysis.stats.collapse_step)."""
    from fpt.train import run_setting_columns

    rng = np.random.default_rng(seed)
    n = len(specs)
    e = np.arange(evals)
    plateau = rng.uniform(0.6, 0.99, n)[:, None]
    tau = rng.uniform(0.5, 4.0, n)[:, None]
    acc = CHANCE + (plateau - CHANCE) * (1 - np.exp(-e / tau))  # run x evaluation
    fate = rng.uniform(size=n)
    diverged = fate < 0.01
    collapsed = (fate >= 0.01) & (fate < 0.02)
    acc[collapsed, -3:] = CHANCE
    runs, run_of, evs, splits, best = [], [], [], [], []
    for i, spec in enumerate(specs):
        names = _splits(spec)
        ev = np.repeat(e, len(names))[1:]  # train comes first: no train row at step 0
        run_of.append(np.full(len(ev), i))
        evs.append(ev)
        splits.append(np.tile(names, evals)[1:])
        # early stopping: the best val evaluation (before a divergence: its weights were kept)
        curve = acc[i, : evals - 3] if diverged[i] and evals > 3 else acc[i]
        best.append(int(np.argmax(curve)) * spec.eval_every if spec.patience else None)
        full = 124_000_000 if spec.trainable == "full" else 100_000
        runs.append(
            {
                **spec.axis_values(),
                "lr": spec.lr,
                "seed": spec.seed,
                "settings": spec.settings_hash(),
                "run": spec.path,
                "diverged": bool(diverged[i]),
                "stop_step": (evals - 1) * spec.eval_every,
                "best_step": best[-1],
                "trainable_params": full,
                "reachable_params": full,
                "total_params": 124_000_000,
                "steps": spec.steps,
                "batch_size": spec.batch_size,
                "patience": spec.patience,
                "eval_every": spec.eval_every,
                **run_setting_columns(spec),
                **dict.fromkeys(PROVENANCE, "synthetic"),
                "schema_version": SCHEMA_VERSION,
            }
        )
    idx, ev, split = np.concatenate(run_of), np.concatenate(evs), np.concatenate(splits)
    per_run = pd.DataFrame(runs).iloc[idx].reset_index(drop=True)
    train = split == "train"
    a = np.clip(acc[idx, ev] + rng.normal(0, 0.01, len(ev)) + 0.03 * train, 0, 1)
    loss = -np.log(np.clip(a, 1e-3, 1))
    loss[diverged[idx] & (ev >= evals - 3)] = np.inf
    step = ev * per_run.pop("eval_every").to_numpy()
    return per_run.assign(
        step=step,
        samples=step * per_run["batch_size"].to_numpy(),
        wall_s=step * 0.05,
        split=split,
        loss=loss,
        accuracy=a,
        eval_examples=pd.Series(np.full(len(ev), EVAL_EXAMPLES), dtype="Int64").mask(train),
        chance=np.where(train, np.nan, CHANCE),
    )


def write_experiments(
    grid: Any, experiments: Iterable[str], root: Path, evals: int = 11
) -> dict[str, Path]:
    """Each experiment's collected metrics, where and as rule collect_experiment writes them
    (results_dir/experiments/<e>/metrics.parquet, its runs' rows in the experiment's order);
    a run two experiments share is in both."""
    df = synthetic_metrics(list(grid.runs.values()), evals)
    bounds = np.flatnonzero(np.r_[True, df["run"].to_numpy()[1:] != df["run"].to_numpy()[:-1]])
    rows = dict(zip(grid.runs, np.split(np.arange(len(df)), bounds[1:]), strict=True))
    out = {}
    for e in experiments:
        if e not in grid.experiments:
            continue
        path = root / "experiments" / e / "metrics.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        take = np.concatenate([rows[r] for r in grid.experiments[e]])
        write_atomic(to_table(df.iloc[take]), path)
        out[e] = path
    return out


def bench_tables(
    n: int = 10_000,
    targets: Sequence[str] = TARGETS,
    configfile: str | Path = "config.yaml",
    evals: int = 11,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Per target: make its experiments hold `n` runs (scaled_config of `configfile`), write
    their metrics, time fpt.analysis.targets.build on them, and check the outputs exist."""
    from fpt.analysis import targets as fpt_targets

    unknown = [t for t in targets if t not in fpt_targets.TARGETS]
    extra = [t for t in targets if fpt_targets.TARGETS.get(t) and fpt_targets.TARGETS[t].extra]
    if unknown or extra:
        raise ValueError(
            f"targets {unknown} do not exist; targets {extra} read inputs this bench does not "
            f"make (attention arrays, lr selections). Choose among "
            f"{[t.name for t in fpt_targets.TARGETS.values() if not t.extra]}"
        )
    results: dict[str, Any] = {}
    load = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="fpt-bench-tables-", dir=workdir) as tmp:
        for name in targets:
            target = fpt_targets.TARGETS[name]
            root = Path(tmp) / name
            t0 = time.perf_counter()
            config, grid = scaled_config(n, configfile, target.experiments)
            metrics = write_experiments(grid, target.experiments, root / "results", evals)
            make_s = time.perf_counter() - t0
            out = target.outputs(root / "figures")
            t0 = time.perf_counter()  # its module's imports (scipy, seaborn), paid once a process
            importlib.import_module(target.module)
            import_s = time.perf_counter() - t0
            load_before = list(os.getloadavg())
            t0 = time.perf_counter()
            fpt_targets.build(
                name,
                metrics=metrics,
                out=out,
                label=config["label"],
                settings=config["analysis"],
            )
            seconds = time.perf_counter() - t0
            results[name] = {
                "experiments": list(metrics),
                "runs": len({r for e in metrics for r in grid.experiments[e]}),
                "rows": sum(_rows(p) for p in metrics.values()),
                "make_s": make_s,
                "import_s": import_s,
                "seconds": seconds,
                "outputs_written": all(p.exists() and p.stat().st_size > 0 for p in out.values()),
                "loadavg_before": load_before,
                "loadavg_after": list(os.getloadavg()),
            }
    return {
        "runs": n,
        "evals_per_run": evals,
        "configfile": str(configfile),
        "targets": results,
        "slowest": max(results, key=lambda t: results[t]["seconds"]) if results else None,
        "loadavg_before": load,
        "loadavg_after": list(os.getloadavg()),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
    }


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
