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
