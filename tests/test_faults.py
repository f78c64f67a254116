"""Faults at the workflow level: Snakemake killed mid-grid (with its jobs, as a node crash
would), then unlocked and rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from fpt.metrics import read_run
from fpt.spec import RunSpec
from fpt.train import train
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # Snakemake end to end: not in the fast lane

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]

CONFIG = {
    "results_dir": "results",
    "figures_dir": "figures",
    "device": "cpu",
    "train_threads": 1,
    "defaults": {
        "backbone": "gpt2",
        "size": "tiny",
        "init": "random",
        "steps": 300,
        "batch_size": 8,
        "eval_every": 50,
        "ckpt_every": 10,
        "options": {"val_size": 16, "test_size": 32},
    },
    "experiments": {
        "table1": {"grid": {"task": ["bit_memory"], "backbone": ["gpt2"], "seed": [0, 1]}}
    },
}


def _wait(pred, proc, timeout=300):
    t0 = time.monotonic()
    while not pred():
        assert proc.poll() is None, "snakemake ended before the fault was injected"
        assert time.monotonic() - t0 < timeout, "timed out waiting"
        time.sleep(0.05)


def test_killed_grid_resumes_without_retraining_finished_runs(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    cmd = [*SNAKEMAKE, "--cores", "1", "--directory", str(tmp_path), "--configfile", str(cfg)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    runs = tmp_path / "results" / "runs"

    def first_done_second_started():
        done = list(runs.rglob("metrics.parquet"))
        ckpts = [
            p for p in runs.rglob("ckpt.pt") if not (p.parent.parent / "metrics.parquet").exists()
        ]
        return len(done) == 1 and ckpts

    _wait(first_done_second_started, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its training job die together
    proc.wait()
    (finished,) = list(runs.rglob("metrics.parquet"))
    mtime = finished.stat().st_mtime_ns

    # The killed Snakemake left its lock behind: unlock, then rerun the same command.
    subprocess.run([*cmd, "--unlock"], check=True, capture_output=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert finished.stat().st_mtime_ns == mtime  # not retrained
    assert "Finished jobid" in out.stderr and out.stderr.count("rule train:") == 1
    resumed = [
        p for p in (tmp_path / "results/logs/train").rglob("*.log") if "resuming" in p.read_text()
    ]
    assert len(resumed) == 1  # the interrupted run continued from its checkpoint
    df = read_run(tmp_path / "results" / "metrics.parquet")
    assert df["run"].nunique() == 2 and df.groupby("run")["step"].max().eq(300).all()

    # The resumed run's metrics are those of the same run trained without interruption.
    (log,) = resumed
    run = str(log.relative_to(tmp_path / "results/logs/train"))[: -len(".log")]
    spec = RunSpec.from_json(json.loads((runs / run / "spec.json").read_text()))
    alone = read_run(train(spec, tmp_path / "alone", device="cpu", threads=1, handle_signals=False))
    cols = ["step", "split", "loss", "accuracy", "diverged", "stop_step"]
    got = df[df["run"] == run][cols].sort_values(cols[:2]).reset_index(drop=True)
    want = alone[cols].sort_values(cols[:2]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def _fifo_at_next_write(path, pid):
    """Block the next atomic write of `path` by process `pid` (fpt.files' temporary name):
    opening a FIFO for writing waits for a reader that never comes, so the job hangs exactly
    there, half way through its outputs, until it is killed."""
    tmp = path.with_name(f".{path.name}.tmp-{pid}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(tmp)
    return tmp


def test_snakemake_killed_during_collect_or_a_table_never_leaves_a_done_looking_output(
    tmp_path,
):
    """Snakemake is SIGKILLed while `collect_experiment` writes, then while a table writes
    its second file. Neither half-done job is taken for done: the old outputs stay whole
    (never truncated), and the rerun redoes both jobs and ends with a consistent table."""
    cfg = {
        **CONFIG,
        "defaults": {**CONFIG["defaults"], "steps": 20, "eval_every": 10},
        "experiments": {"table1": {"grid": {"task": ["bit_xor"], "backbone": ["gpt2"]}}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [*SNAKEMAKE, "table1_fpt_vs_full", "--cores", "1", "--directory", str(tmp_path)]
    cmd += ["--configfile", str(tmp_path / "config.yaml")]
    subprocess.run(cmd, check=True, capture_output=True)
    collected = tmp_path / "results/experiments/table1/metrics.parquet"
    table = {e: tmp_path / f"figures/table1_fpt_vs_full.{e}" for e in ("md", "tex", "csv")}
    old = {p: p.read_bytes() for p in [collected, *table.values()]}

    def killed_at(blocked_path, reached, rule):
        """Rerun `rule` (forced) with `blocked_path`'s write hanging; SIGKILL Snakemake once
        `reached()`; unlock as the README says."""
        proc = subprocess.Popen(
            [*cmd, "--forcerun", rule],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            fifo = _fifo_at_next_write(blocked_path, proc.pid)  # run: jobs run in its process
            _wait(reached, proc, timeout=120)
            time.sleep(0.5)
        finally:  # a failed wait must not leave a Snakemake hanging on the FIFO
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        fifo.unlink()  # the test's own device, not something fpt left
        subprocess.run([*cmd, "--unlock"], check=True, capture_output=True)

    def rerun(*rules):
        t0 = time.time()
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        for rule in rules:  # redone, not taken for done
            assert f"rule {rule}:" in out.stderr, (rule, out.stderr[-3000:])
        redone = [collected] if "collect_experiment" in rules else []
        assert all(p.stat().st_mtime >= t0 for p in [*redone, *table.values()])

    # 1. killed while the experiment's metrics are being written (the table is out of date
    # too: its Markdown file was lost, so the rerun needs the collection)
    table["md"].unlink()
    collect_log = tmp_path / "results/logs/collect/table1.log"
    t0 = time.time()
    killed_at(
        collected,
        lambda: collect_log.exists() and collect_log.stat().st_mtime > t0,
        "collect_experiment",
    )
    # Snakemake removed the old file before the job; the new one never landed half-written
    assert not collected.exists() or collected.read_bytes() == old[collected]
    assert not list(collected.parent.glob(".*.tmp-*"))
    rerun("collect_experiment", "table1_fpt_vs_full")

    # 2. killed while the table writes its LaTeX file (its Markdown is already new)
    old_tex = table["tex"].read_bytes()
    t0 = time.time()
    killed_at(
        table["tex"],
        lambda: table["md"].exists() and table["md"].stat().st_mtime > t0,
        "table1_fpt_vs_full",
    )
    # the LaTeX file is absent (removed before the job) or whole, never truncated; the
    # Markdown written before the hang is whole, but the job as a whole is not done
    assert not table["tex"].exists() or table["tex"].read_bytes() == old_tex
    assert table["md"].read_text().startswith("### ")
    rerun("table1_fpt_vs_full")
    assert not list((tmp_path / "figures").glob(".*.tmp-*"))
    csv = pd.read_csv(table["csv"])
    assert csv["n"].max() == 1  # the one run of the grid, in the rendered table
