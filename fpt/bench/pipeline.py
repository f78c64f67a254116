"""Pipeline speed: collecting many run files into one Parquet, and the Snakemake dry run of
the full paper grid. `fpt bench-collect` and `fpt bench-dryrun` print JSON."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fpt.metrics import SCHEMA_VERSION, to_table, upgrade, write_atomic

REPO = Path(__file__).resolve().parents[2]  # fpt/bench/pipeline.py -> the repository


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
    }


def bench_dryrun(configfile: str = "config.yaml", repeats: int = 1) -> dict[str, Any]:
    """Wall time of `snakemake -n` of `configfile` (parse, validate, expand, plan the DAG)."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "all", "--configfile", configfile]
    times = []
    load = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="fpt-bench-dryrun-") as tmp:
        # a fresh working directory: no results, every run planned
        cmd += ["-s", str(REPO / "workflow" / "Snakefile"), "--directory", tmp]
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if out.returncode != 0:
                raise RuntimeError(f"dry run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    jobs = _job_count(out.stdout + out.stderr)
    return {
        "command": " ".join(["snakemake", *cmd[3:]]),
        "configfile": configfile,
        "seconds": min(times),
        "all_seconds": times,
        "jobs": jobs,
        "loadavg_before": load,
        "loadavg_after": list(os.getloadavg()),
        "nproc": os.cpu_count(),
    }


def _job_count(text: str) -> int | None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return None
