"""The estimate against finished runs: predicted vs measured time (metrics' `wall_s`) and host
memory (the Snakemake benchmark's `max_rss`) of every run under a results folder."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from fpt.plan.cost import cpu_seconds, gpu_seconds, run_cost
from fpt.plan.gpus import gpu_for_device_name
from fpt.plan.hardware import Hardware
from fpt.plan.memory import job_memory
from fpt.plan.render import text_table
from fpt.spec import RunSpec


def compare(results_dir: str | Path, hw: Hardware) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Predicted vs measured time of every finished run under `results_dir`/runs: the last
    metrics row's `wall_s` (recorded before that row's evaluation ran) against the estimate
    for the steps the run trained (`stop_step`) and the evaluations before its last. CPU runs
    are predicted with the CPU model, CUDA runs with the GPU their `device_name` names (else
    `hw.gpu`). Memory: the host RAM estimate of a lone run against the peak RSS (`max_rss`,
    MB) of its Snakemake benchmark, `results_dir`/benchmarks/train/<run>.tsv, where there is
    one (the last attempt's). Returns the rows and a summary: total ratio (measured /
    predicted over all runs), the median of the per-run ratios, and the memory's."""
    import pandas as pd
    import pyarrow.parquet as pq

    root = Path(results_dir)
    runs_dir = root / "runs" if (root / "runs").is_dir() else root
    rows = []
    cols = ["step", "wall_s", "stop_step", "device", "device_name"]
    for metrics in sorted(runs_dir.rglob("metrics.parquet")):
        spec_file = metrics.parent / "spec.json"
        if not spec_file.is_file():
            continue
        spec = RunSpec.from_json(json.loads(spec_file.read_text()))
        df = pq.ParquetFile(metrics).read(columns=cols).to_pandas()
        last = df.loc[df["step"].idxmax()]
        stop = spec.steps if pd.isna(last["stop_step"]) else int(last["stop_step"])
        cost = run_cost(spec, steps=stop, n_evals=max(0, df["step"].nunique() - 1))
        device = str(last["device"] or "cpu")
        if device.startswith("cuda"):
            gpu = gpu_for_device_name(last["device_name"]) or hw.gpu
            predicted = gpu_seconds([cost], hw, gpu)
            how = gpu
        else:
            predicted = cpu_seconds([cost], hw)
            how = "cpu"
        measured = float(last["wall_s"])
        run = str(metrics.parent.relative_to(runs_dir))
        mem = job_memory([spec])["host_gpu" if device.startswith("cuda") else "host_cpu"]
        rss = _max_rss(root / "benchmarks" / "train" / f"{run}.tsv")
        rows.append(
            {
                "run": run,
                "model": how,
                "steps": stop,
                "predicted_s": predicted,
                "measured_s": measured,
                "ratio": measured / predicted if predicted > 0 else math.nan,
                "predicted_mb": mem / (1 << 20),
                "max_rss_mb": rss,
                "mem_ratio": rss / (mem / (1 << 20)) if rss is not None else math.nan,
            }
        )
    ratios = [r["ratio"] for r in rows if math.isfinite(r["ratio"])]
    mem_ratios = [r["mem_ratio"] for r in rows if math.isfinite(r["mem_ratio"])]
    pred = sum(r["predicted_s"] for r in rows)
    summary = {
        "runs": len(rows),
        "predicted_s": pred,
        "measured_s": sum(r["measured_s"] for r in rows),
        "ratio": sum(r["measured_s"] for r in rows) / pred if pred > 0 else math.nan,
        "median_ratio": statistics.median(ratios) if ratios else math.nan,
        "memory_runs": len(mem_ratios),
        "median_mem_ratio": statistics.median(mem_ratios) if mem_ratios else math.nan,
        "max_mem_ratio": max(mem_ratios) if mem_ratios else math.nan,
    }
    return rows, summary


def _max_rss(path: Path) -> float | None:
    """The last row's `max_rss` (MB) of a Snakemake benchmark file, if readable."""
    import csv

    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        return float(rows[-1]["max_rss"])
    except (OSError, IndexError, KeyError, TypeError, ValueError):
        return None


def render_compare(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    table = [
        [
            r["run"],
            r["model"],
            str(r["steps"]),
            f"{r['predicted_s']:.1f}",
            f"{r['measured_s']:.1f}",
            f"{r['ratio']:.2f}",
            f"{r['predicted_mb']:.0f}",
            "-" if r["max_rss_mb"] is None else f"{r['max_rss_mb']:.0f}",
        ]
        for r in rows
    ]
    header = ["run", "predicted on", "steps", "predicted s", "measured wall_s", "ratio"]
    header += ["predicted MB", "max_rss MB"]
    foot = (
        f"{summary['runs']} runs: predicted {summary['predicted_s']:.1f} s, measured "
        f"{summary['measured_s']:.1f} s, ratio measured/predicted {summary['ratio']:.2f} "
        f"(median per run {summary['median_ratio']:.2f})"
    )
    if summary["memory_runs"]:
        foot += (
            f"\nmemory ({summary['memory_runs']} runs with a benchmark): max_rss / predicted "
            f"median {summary['median_mem_ratio']:.2f}, max {summary['max_mem_ratio']:.2f} "
            "(before the safety factor)"
        )
    return text_table(header, table) + "\n" + foot + "\n"
