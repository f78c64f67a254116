"""The pipeline-at-scale benchmarks (BENCHMARKS.md, "Pipeline at 10,000 runs") at a tiny N:
they run and return a sane structure. Correctness only; their speed lives in BENCHMARKS.md."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fpt import grid
from fpt.analysis.stats import final_rows
from fpt.bench.pipeline import _job_counts, bench_dryrun, scaled_config
from fpt.bench.report import report
from fpt.bench.tables import bench_tables, synthetic_metrics, write_experiments
from fpt.metrics import SCHEMA, read_run, to_table
from fpt.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
SMALL = str(REPO / ".test" / "config.yaml")


def test_scaled_config_has_exactly_n_plannable_runs():
    config, g = scaled_config(50, SMALL)
    assert len(g.runs) == 50
    base = grid.load_config(SMALL)
    assert set(g.experiments) == set(base["experiments"])
    # what Snakemake is given: the config as YAML, valid and expanding to the same runs
    text = yaml.safe_dump(config, sort_keys=False)
    again = grid.expand(grid.validate_config(yaml.safe_load(text)))
    assert again.runs == g.runs and again.experiments == g.experiments
    for spec in g.runs.values():
        assert spec.seed not in TASKS[spec.task].reserved_seeds(spec.options)
    # only some experiments: all n runs are theirs
    _, only = scaled_config(30, SMALL, ["table1"])
    assert list(only.experiments) == ["table1"] and len(only.experiments["table1"]) == 30


def test_scaled_config_refuses_fewer_runs_than_one_seed():
    with pytest.raises(ValueError, match="one seed"):
        scaled_config(5, REPO / "config.yaml")


def test_job_counts_reads_snakemakes_job_stats():
    text = "Job stats:\njob      count\n-----  -------\nall        1\ntrain     50\ntotal     51\n"
    assert _job_counts(text) == {"all": 1, "train": 50, "total": 51}


def test_synthetic_metrics_are_runs_in_the_metrics_schema():
    _, g = scaled_config(20, SMALL)
    specs = list(g.runs.values())
    df = synthetic_metrics(specs, evals=4)
    assert to_table(df).schema.equals(SCHEMA)
    for spec in specs:
        rows = df[df["run"] == spec.path]
        splits = ("train", *TASKS[spec.task].eval_splits)
        assert len(rows) == 4 * len(splits) - 1  # no train row at step 0
        assert set(rows["split"]) == set(splits)
        assert rows["step"].max() == 3 * spec.eval_every
    assert np.isfinite(df["accuracy"]).all() and df["accuracy"].between(0, 1).all()


def _final_rows_per_group(df: pd.DataFrame, margin: float = 0.02) -> pd.DataFrame:
    """final_rows as it was written before it became one pass over numpy arrays: one pandas
    group per run (the oracle the fast path must match)."""
    from fpt.analysis.stats import collapse_step, reported

    d = reported(df[np.isfinite(df["loss"].to_numpy(dtype=float))])
    best = pd.to_numeric(d["best_step"], errors="coerce")
    d = d[best.isna() | (d["step"] == best)]
    picked, collapsed = [], []
    for _, g in d.groupby("run", sort=True):
        at = None
        if not g["best_step"].notna().any():
            chance = pd.to_numeric(g["chance"], errors="coerce").max()
            examples = pd.to_numeric(g["eval_examples"], errors="coerce").max()
            at = collapse_step(
                g["step"].tolist(),
                g["accuracy"].astype(float).tolist(),
                None if pd.isna(chance) else float(chance),
                None if pd.isna(examples) else int(examples),
                margin,
            )
        rows = g[g["step"] == at] if at is not None else g
        picked.append(rows["step"].idxmax())
        collapsed.append(at is not None)
    return d.loc[picked].assign(collapsed=collapsed).reset_index(drop=True)


def test_final_rows_one_pass_matches_one_group_per_run():
    _, g = scaled_config(300, SMALL)  # with early-stopped (swept) runs
    df = synthetic_metrics(list(g.runs.values()), evals=6)  # ~1 % diverged, ~1 % collapsed
    df.loc[df.index[:30], "chance"] = np.nan  # a run without chance: no collapse check
    df = df.sample(frac=1.0, random_state=1)  # rows in any order, labels not a range
    got = final_rows(df, "test", 0.02)
    pd.testing.assert_frame_equal(got, _final_rows_per_group(df))
    assert sorted(got["run"]) == sorted(set(df["run"])) and got["collapsed"].any()
    assert (got["best_step"].notna() & (got["step"] == got["best_step"])).any()


def test_write_experiments_as_the_collect_rule(tmp_path):
    _, g = scaled_config(30, SMALL)
    paths = write_experiments(g, list(g.experiments), tmp_path, evals=3)
    for e, p in paths.items():
        assert p == tmp_path / "experiments" / e / "metrics.parquet"
        runs = read_run(p)["run"]
        assert list(dict.fromkeys(runs)) == g.experiments[e]  # the experiment's runs, in order


def test_bench_tables_renders_each_target_from_n_runs(tmp_path):
    targets = ("table1_fpt_vs_full", "table4_compute_efficiency", "table13_train_vs_test")
    r = bench_tables(30, targets, SMALL, evals=3, workdir=tmp_path)
    assert list(r["targets"]) == list(targets)
    for t in r["targets"].values():
        assert t["runs"] == 30 and t["outputs_written"] and t["seconds"] > 0
        assert t["rows"] >= 30 * (3 * 3 - 1)
    with pytest.raises(ValueError, match="attention"):
        bench_tables(30, ("attention_maps",), SMALL)


def test_report_shows_the_measured_at_scale_figures(tmp_path):
    load = [1.0, 1.0, 1.0]
    (tmp_path / "tables_10000.json").write_text(
        json.dumps(
            {
                "loadavg_after": load,
                "targets": {
                    "table1_fpt_vs_full": {
                        "runs": 10000,
                        "rows": 320000,
                        "seconds": 3.25,
                        "outputs_written": True,
                        "loadavg_before": load,
                        "loadavg_after": load,
                    }
                },
            }
        )
    )
    (tmp_path / "dryrun.json").write_text(
        json.dumps(
            {
                "configfile": "config.yaml",
                "jobs": 1030,
                "seconds": 7.25,
                "all_seconds": [7.5, 7.25],
                "loadavg_before": load,
                "loadavg_after": load,
                "nproc": 2,
                "cpu": "CPU A",
            }
        )
    )
    (tmp_path / "machine.txt").write_text("nproc: 2\nmodel name\t: CPU B\ndate: 2026-01-02\n")
    text = report(tmp_path)
    row = next(line for line in text.splitlines() if "render table1_fpt_vs_full" in line)
    assert "10000 runs, 320000 rows" in row and "| 3.2 |" in row  # the file's measurement
    assert "met" not in text.split() and "target" not in text  # measured figures only
    # each figure under the machine that measured it: the file's own cpu, else machine.txt's
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads == ["## Measured on CPU A, 2 cores", "## Measured on CPU B, 2 cores, 2026-01-02"]
    assert text.index("| 7.2 |") < text.index(heads[1]) < text.index("| 3.2 |")


@pytest.mark.slow  # Snakemake parses the workflow: ~5-10 s on 2 shared cores
def test_bench_dryrun_plans_one_train_job_per_run():
    r = bench_dryrun(SMALL, runs=50)
    assert r["runs"] == 50 and r["train_jobs"] == 50 and r["jobs"] > 50
    assert r["jobs"] == sum(v for k, v in r["jobs_per_rule"].items() if k != "total")
    assert 0 < r["grid_share"] and r["grid_expand_s"] > 0


@pytest.mark.slow  # every default target, the convergence figure included: ~10 s
def test_bench_tables_cli_default_targets():
    out = subprocess.run(
        [sys.executable, "-m", "fpt", "bench-tables", "--runs", "40", "--configfile", SMALL],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    r = json.loads(out.stdout)
    assert r["runs"] == 40 and r["slowest"] in r["targets"]
    assert all(t["runs"] == 40 and t["outputs_written"] for t in r["targets"].values())
