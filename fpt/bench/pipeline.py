"""Pipeline speed: collecting many run files into one Parquet, and the Snakemake dry run of
the full paper grid or of a synthetic config of N runs (`scaled_config`). `fpt bench-collect`
and `fpt bench-dryrun` print JSON; `fpt bench-tables` (fpt.bench.tables) renders tables
from N synthetic runs."""

from __future__ import annotations

import copy
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from fpt.metrics import SCHEMA_VERSION, to_table, upgrade, write_atomic

REPO = Path(__file__).resolve().parents[2]  # fpt/bench/pipeline.py -> the repository


def cpu_model() -> str:
    """/proc/cpuinfo's model name (what a pipeline figure was measured on), or ''."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def synthetic_rows(i: int, evals: int = 11) -> list[dict[str, Any]]:
    """The rows of one plausible run: `evals` evaluations x (train, val, test)."""
    run = f"task=bit_xor/backbone=gpt2/size=small/init=random/trainable=fpt/depth=all/input_init=orthogonal/lr=0.001/seed={i}/settings=0000abcd"
    base = {
        "task": "bit_xor",
        "backbone": "gpt2",
        "size": "small",
        "init": "random",
        "trainable": "fpt",
        "depth": "all",
        "input_init": "orthogonal",
        "lr": 1e-3,
        "seed": i,
        "settings": "0000abcd",
        "run": run,
        "diverged": False,
        "stop_step": 1000,
        "best_step": None,
        "trainable_params": 1000,
        "total_params": 124_000_000,
        "steps": 1000,
        "batch_size": 4,
        "patience": 0,
        "device": "cpu",
        "torch_version": "x",
        "transformers_version": "x",
        "fpt_version": "x",
        "python_version": "x",
        "git_rev": "x",
        "schema_version": SCHEMA_VERSION,
    }
    rows = []
    for e in range(evals):
        for split in ("train", "val", "test"):
            if split == "train" and e == 0:
                continue
            rows.append(
                {
                    **base,
                    "step": 100 * e,
                    "samples": 400 * e,
                    "wall_s": 1.5 * e,
                    "split": split,
                    "loss": 0.7 / (1 + e),
                    "accuracy": 0.5 + 0.04 * e,
                }
            )
    return rows


def make_run_files(root: Path, n: int) -> list[Path]:
    """`n` run files under `root` in hive-style run folders (the layout the workflow writes).
    The table of one run is built once and only its run-specific columns change."""
    template = to_table(synthetic_rows(0))
    files = []
    for i in range(n):
        t = template.set_column(
            template.schema.get_field_index("seed"), "seed", [[i] * template.num_rows]
        )
        path = root / f"runs/task=bit_xor/seed={i}/settings=0000abcd/metrics.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, path)
        files.append(path)
    return files


def bench_collect(n: int = 5000, workdir: Path | None = None) -> dict[str, Any]:
    """Make `n` synthetic run files, then time fpt.analysis.collect.collect over them and
    check the result (row count, one row set per file, schema)."""
    from fpt.analysis.collect import collect
    from fpt.metrics import SCHEMA

    with tempfile.TemporaryDirectory(prefix="fpt-bench-collect-", dir=workdir) as tmp:
        t0 = time.perf_counter()
        files = make_run_files(Path(tmp), n)
        make_s = time.perf_counter() - t0
        out = Path(tmp) / "metrics.parquet"
        load = list(os.getloadavg())
        t0 = time.perf_counter()
        rows = collect(files, out)
        collect_s = time.perf_counter() - t0
        table = pq.read_table(out)
        # before: the loop collect had (pq.read_table + upgrade per file), same files, same load
        t0 = time.perf_counter()
        naive = pa.concat_tables([upgrade(pq.read_table(f), f) for f in files])
        write_atomic(naive, Path(tmp) / "naive.parquet")
        naive_s = time.perf_counter() - t0
        per_file = len(synthetic_rows(0))
        ok = (
            rows == n * per_file == table.num_rows
            and table.schema.equals(SCHEMA)
            and sorted(set(table.column("seed").to_pylist())) == list(range(n))
        )
    return {
        "files": n,
        "rows": rows,
        "make_files_s": make_s,
        "collect_s": collect_s,
        "before_s": naive_s,
        "files_per_s": n / collect_s,
        "correct": ok,
        "loadavg_before": load,
        "loadavg_after": list(os.getloadavg()),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
    }


def _products(experiment: dict[str, Any]) -> list[dict[str, Any]]:
    grid = experiment["grid"]
    return grid if isinstance(grid, list) else [grid]


def _with_seeds(
    config: dict[str, Any], seeds: list[int], fill: list[int], template: str | None
) -> dict[str, Any]:
    """`config` with every grid product's seed list set to `seeds`, and, if `fill`, one more
    product in experiment `template`: its first grid point (each axis' first value) with the
    seeds `fill`."""
    out = copy.deepcopy(config)
    for exp in out["experiments"].values():
        exp["grid"] = [{**prod, "seed": list(seeds)} for prod in _products(exp)]
    if fill:
        first = _products(out["experiments"][template])[0]
        point = {axis: values[:1] for axis, values in first.items()}
        out["experiments"][template]["grid"].append({**point, "seed": list(fill)})
    return out


def scaled_config(
    n: int, configfile: str | Path = "config.yaml", experiments: Iterable[str] | None = None
) -> tuple[dict[str, Any], Any]:
    """A synthetic config of exactly `n` runs, and its expanded grid (fpt.grid.Grid).

    It is `configfile` (validated, defaults filled; only `experiments` if given) with every
    grid product's seed list replaced by the same k seeds, k as large as fits in `n` (seeds
    a task reserves for its evaluation sets are skipped), and the runs still missing made up
    by more seeds of one grid point of the first fixed-lr experiment. The runs are
    plannable by Snakemake (fpt.grid accepts them), not meant to be trained."""
    from fpt import grid as fpt_grid
    from fpt.tasks import TASKS

    base = fpt_grid.load_config(configfile)
    if experiments is not None:
        keep = [e for e in experiments if e in base["experiments"]]
        if not keep:
            raise ValueError(f"{configfile} has none of the experiments {list(experiments)}")
        base["experiments"] = {e: base["experiments"][e] for e in keep}
    base_grid = fpt_grid.expand(base)
    reserved = {
        s for sp in base_grid.runs.values() for s in TASKS[sp.task].reserved_seeds(sp.options)
    }
    free = (s for s in itertools.count() if s not in reserved)
    seeds = list(itertools.islice(free, max(n, 1) + 1))  # enough for any k and the fill
    fixed_lr = [e for e, p in base_grid.protocols.items() if p == "paper"]
    if not fixed_lr:
        raise ValueError(f"{configfile}: no fixed-lr experiment to fill up to {n} runs with")

    def runs(k: int, fill: int = 0) -> tuple[dict[str, Any], Any]:
        config = _with_seeds(base, seeds[:k], seeds[k : k + fill], fixed_lr[0])
        return config, fpt_grid.expand(config)

    per_seed = len(runs(1)[1].runs)
    if per_seed > n:
        raise ValueError(
            f"one seed of {configfile}'s experiments is already {per_seed} runs, more than {n}: "
            "ask for more runs, or scale a smaller config (--configfile .test/config.yaml)"
        )
    k = max(1, n // per_seed)
    config, grid = runs(k)
    while len(grid.runs) > n:  # runs grow with k; shared runs make the step uneven
        k -= 1
        config, grid = runs(k)
    while len(runs(k + 1)[1].runs) <= n:
        k += 1
        config, grid = runs(k)
    fill = 0
    while len(grid.runs) < n:  # one seed of one grid point: one run (two with a source run)
        fill += n - len(grid.runs)
        config, grid = runs(k, fill)
    if len(grid.runs) != n:
        raise ValueError(f"could not make exactly {n} runs from {configfile} ({len(grid.runs)})")
    return config, grid


def bench_dryrun(
    configfile: str = "config.yaml", repeats: int = 1, runs: int | None = None
) -> dict[str, Any]:
    """Wall time of `snakemake -n` of `configfile` (parse, validate, expand, plan the DAG),
    in a fresh working directory (nothing exists: every run is planned). With `runs`, of a
    synthetic config of that many runs made from `configfile` (`scaled_config`), and the
    time of fpt.grid's own part (validate_config and expand, each run once by the
    Snakefile), so that a slow dry run can be put down to the grid or to Snakemake."""
    from fpt import grid as fpt_grid

    with tempfile.TemporaryDirectory(prefix="fpt-bench-dryrun-") as tmp:
        out: dict[str, Any] = {"configfile": configfile}
        if runs is not None:
            t0 = time.perf_counter()
            config, grid = scaled_config(runs, configfile)
            out["make_config_s"] = time.perf_counter() - t0
            configfile = str(Path(tmp) / f"config_{runs}_runs.yaml")
            Path(configfile).write_text(yaml.safe_dump(config, sort_keys=False))
            raw = yaml.safe_load(Path(configfile).read_text())
            t0 = time.perf_counter()
            validated = fpt_grid.validate_config(raw, source=configfile)
            out["validate_config_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            grid = fpt_grid.expand(validated)
            out["grid_expand_s"] = time.perf_counter() - t0
            out |= {"runs": len(grid.runs), "experiments": len(grid.experiments)}
        else:
            out["runs"] = len(fpt_grid.expand(fpt_grid.load_config(REPO / configfile)).runs)
        # what the Snakefile pays before its first line of planning: python and fpt.grid (torch)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import fpt.grid"], cwd=REPO, check=True)
        out["import_fpt_grid_s"] = time.perf_counter() - t0
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--quiet",
            "all",
            "--configfile",
            configfile,
        ]
        # a fresh working directory: no results, every run planned
        cmd += ["-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(Path(tmp) / "wd")]
        times = []
        load = list(os.getloadavg())
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if res.returncode != 0:
                raise RuntimeError(f"dry run failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    counts = _job_counts(res.stdout + res.stderr)
    out |= {
        "command": " ".join(["snakemake", *cmd[3:]]),
        "seconds": min(times),
        "all_seconds": times,
        "jobs": counts.get("total"),
        "train_jobs": counts.get("train"),
        "jobs_per_rule": counts,
        "loadavg_before": load,
        "loadavg_after": list(os.getloadavg()),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
    }
    if runs is not None:  # fpt's part of the dry run: import, validation, expansion
        grid_s = out["import_fpt_grid_s"] + out["validate_config_s"] + out["grid_expand_s"]
        out["grid_share"] = grid_s / out["seconds"]
    return out


def _job_counts(text: str) -> dict[str, int]:
    """Snakemake's job-stats table (`rule  count` lines, then `total  N`) as a dict."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0].isidentifier():
            counts[parts[0]] = int(parts[1])
            if parts[0] == "total":
                break
    return counts
