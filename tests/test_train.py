"""Training: metrics contract, determinism, resume after kill -9 / SIGTERM, divergence."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from fpt.metrics import COLUMNS, read_run
from fpt.spec import RunSpec
from fpt.train import EXIT_PREEMPTED, train

SPEC = RunSpec(
    task="bit_memory",
    backbone="gpt2",
    size="tiny",
    init="random",
    steps=240,
    batch_size=8,
    micro_batch_size=4,
    eval_every=20,
    ckpt_every=10,
    options={"val_size": 32, "test_size": 64},
)
COMPARE = ["step", "samples", "split", "loss", "accuracy", "diverged"]


def _cli(spec: RunSpec, out) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fpt",
        "train",
        *spec.cli_args(),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    subprocess.run(_cli(SPEC, out), check=True, capture_output=True)
    return read_run(out / "metrics.parquet")


def test_metrics_follow_the_contract(reference):
    df = reference
    assert list(df.columns) == COLUMNS
    assert set(df["split"]) == {"train", "val", "test"}
    assert sorted(df["step"].unique()) == list(range(0, 241, 20))
    assert (df["samples"] == df["step"] * 8).all()
    assert (
        (df["task"] == "bit_memory").all()
        and (df["trainable"] == "fpt").all()
        and (df["lr"] == 1e-3).all()
    )
    assert df["git_rev"].iloc[0] and df["torch_version"].iloc[0] == torch.__version__
    assert not df["diverged"].any()
    assert df["trainable_params"].iloc[0] < df["total_params"].iloc[0]
    assert df[df["split"] == "train"]["step"].min() == 20  # no train row before any step


def _wait_for(path, proc, timeout=120):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.02)


def test_kill_9_then_rerun_gives_the_uninterrupted_metrics(tmp_path, reference):
    proc = subprocess.Popen(
        _cli(SPEC, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "checkpoint" / "ckpt.pt", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it really was killed mid-run
    assert not (tmp_path / "metrics.parquet").exists()
    resumed = subprocess.run(_cli(SPEC, tmp_path), check=True, capture_output=True, text=True)
    assert "resuming" in resumed.stderr
    got = read_run(tmp_path / "metrics.parquet")
    pd.testing.assert_frame_equal(got[COMPARE], reference[COMPARE])


def test_sigterm_checkpoints_exits_75_and_resumes(tmp_path, reference):
    proc = subprocess.Popen(
        _cli(SPEC, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "checkpoint" / "ckpt.pt", proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == EXIT_PREEMPTED
    state = torch.load(tmp_path / "checkpoint" / "ckpt.pt", weights_only=False)
    assert 0 < state["step"] < SPEC.steps
    subprocess.run(_cli(SPEC, tmp_path), check=True, capture_output=True)
    got = read_run(tmp_path / "metrics.parquet")
    pd.testing.assert_frame_equal(got[COMPARE], reference[COMPARE])


def test_a_checkpoint_for_other_settings_is_not_resumed(tmp_path):
    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        steps=20,
        batch_size=4,
        eval_every=10,
        ckpt_every=10,
        options={"val_size": 16, "test_size": 16},
    )
    train(spec, tmp_path, device="cpu", handle_signals=False)
    longer = RunSpec(**{**spec.to_json(), "steps": 30})
    train(longer, tmp_path, device="cpu", handle_signals=False)
    df = read_run(tmp_path / "metrics.parquet")
    assert sorted(df["step"].unique()) == [
        0,
        10,
        20,
        30,
    ]  # retrained from scratch, not from step 20
    assert json.loads((tmp_path / "spec.json").read_text())["steps"] == 30


def test_divergence_ends_the_run_as_a_result(tmp_path, monkeypatch):
    """Training inputs turn non-finite after 12 steps (a stand-in for an exploding run): the
    run ends at the next evaluation with diverged=true and keeps its earlier, finite rows."""
    from fpt.tasks.bits import BitXOR

    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        trainable="full",
        steps=200,
        batch_size=8,
        eval_every=5,
        ckpt_every=100,
        options={"val_size": 16, "test_size": 16},
    )
    orig, calls = BitXOR.train_batch, {"n": 0}

    def exploding(self, n, g):
        calls["n"] += 1
        b = orig(self, n, g)
        if calls["n"] > 12:
            b.x = b.x * float("inf")
        return b

    monkeypatch.setattr(BitXOR, "train_batch", exploding)
    df = read_run(train(spec, tmp_path, device="cpu", handle_signals=False))
    assert df["diverged"].all()
    assert df["step"].max() == 15  # stopped at the first evaluation after the blow-up
    finite = df[np.isfinite(df["loss"])]
    assert sorted(finite["step"].unique()) == [0, 5, 10]

    from fpt.analysis.stats import final_rows

    assert final_rows(df, "test")["step"].item() == 10  # tables report the value before divergence


def test_cpu_training_is_deterministic(tmp_path):
    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        steps=30,
        batch_size=8,
        eval_every=10,
        options={"val_size": 16, "test_size": 32},
    )
    a = read_run(train(spec, tmp_path / "a", device="cpu", handle_signals=False))
    b = read_run(train(spec, tmp_path / "b", device="cpu", handle_signals=False))
    pd.testing.assert_frame_equal(a[COMPARE], b[COMPARE])
    os.sync()
