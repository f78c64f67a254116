"""Live metrics (progress.parquet after every evaluation) and `fpt status`: runs in progress,
finished, pending for a config, unreadable files, the SLURM summary."""

import json
import os
import shutil
import signal

import pandas as pd
import pytest
import yaml

import fpt.train as ft
from fpt import checkpoint
from fpt.cli import main
from fpt.metrics import COLUMNS, read_run, to_table, write_atomic
from fpt.spec import RunSpec
from tests.synthetic import metric_rows

SPEC = RunSpec(
    task="bit_memory",
    backbone="gpt2",
    size="tiny",
    init="random",
    steps=60,
    batch_size=8,
    micro_batch_size=4,
    eval_every=20,
    ckpt_every=10,
    options={"val_size": 32, "test_size": 64},
)
COMPARE = ["step", "samples", "split", "loss", "accuracy", "diverged", "wall_s"]


def _status(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["status", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _by_run(report: dict) -> dict:
    return {r["run"]: r for r in report["runs"]}


REAL_WHICH = shutil.which


@pytest.fixture(autouse=True)
def _no_squeue(monkeypatch):
    """No SLURM here, whatever the machine has (PATH itself stays: git_rev needs git)."""
    monkeypatch.setattr(
        shutil, "which", lambda cmd, *a, **k: None if cmd == "squeue" else REAL_WHICH(cmd, *a, **k)
    )


def _preempted_run(results, monkeypatch, after: int = 50):
    """SPEC trained in-process into results/runs/<path>, SIGTERMed after `after` steps."""
    run_dir = results / "runs" / SPEC.path
    calls, step = [0], ft.train_step

    def preempt(*a, **k):
        step(*a, **k)
        calls[0] += 1
        if calls[0] == after:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(ft, "train_step", preempt)
    with pytest.raises(SystemExit) as excinfo:  # the conftest guard restores the handler
        ft.train(SPEC, run_dir, device="cpu", progress=False, threads=1)
    assert excinfo.value.code == ft.EXIT_PREEMPTED
    monkeypatch.setattr(ft, "train_step", step)
    return run_dir


def test_progress_parquet_during_a_run_then_status_in_progress_and_finished(
    tmp_path, monkeypatch, capsys
):
    results = tmp_path / "results"
    run_dir = _preempted_run(results, monkeypatch, after=50)

    # Evaluations at steps 0, 20, 40 (step 0: val and test only; then train, val, test).
    assert not (run_dir / "metrics.parquet").exists()
    live = pd.read_parquet(run_dir / "progress.parquet")
    assert list(live.columns) == COLUMNS  # metrics.parquet's schema
    assert sorted(set(live["step"])) == [0, 20, 40]
    assert len(live) == 2 + 3 + 3
    assert live["stop_step"].isna().all() and live["best_step"].isna().all()
    assert (live["patience"] == SPEC.patience).all() and not live["diverged"].any()
    # exactly the evaluations so far: the rows the step-50 checkpoint holds
    state = checkpoint.load_latest(run_dir / "checkpoint", SPEC.to_json())
    assert state["step"] == 50
    held = to_table(state["rows"]).to_pandas()
    pd.testing.assert_frame_equal(live[COMPARE], held[COMPARE])

    report = _status(capsys, "--results", results)
    assert report["counts"] == {"in_progress": 1, "finished": 0, "pending": 0, "unreadable": 0}
    r = _by_run(report)[SPEC.path]
    assert r["state"] == "in_progress" and r["unreadable"] is None
    assert (r["step"], r["steps"], r["split"], r["evaluations"]) == (40, 60, "test", 3)
    test40 = live[(live["step"] == 40) & (live["split"] == "test")]["accuracy"].item()
    assert r["accuracy"] == pytest.approx(test40)
    w = live.groupby("step")["wall_s"].max()
    assert r["steps_per_s"] == pytest.approx(20 / (w[40] - w[20]), rel=1e-2)
    assert r["eta_s"] == pytest.approx(20 / r["steps_per_s"], abs=1)
    assert 0 <= r["last_write_age_s"] < 600
    assert report["slurm"] is None  # no squeue

    # The rerun resumes and finishes: metrics.parquet, and the live copy is gone.
    metrics = ft.train(SPEC, run_dir, device="cpu", progress=False, handle_signals=False)
    assert not (run_dir / "progress.parquet").exists()
    final = read_run(metrics)
    assert (final["stop_step"] == 60).all()
    done = _by_run(_status(capsys, "--results", results))[SPEC.path]
    assert done["state"] == "finished" and done["unreadable"] is None
    test60 = final[(final["step"] == 60) & (final["split"] == "test")]["accuracy"].item()
    assert (done["step"], done["steps"], done["accuracy"]) == (60, 60, pytest.approx(test60))
    assert done["wall_s"] == pytest.approx(final["wall_s"].max(), abs=0.1)
    assert done["diverged"] is False


def test_finished_run_is_counted_once_even_beside_a_progress_file(tmp_path, capsys):
    """metrics.parquet decides: a leftover progress.parquet (a crash between the two) does
    not make a finished run also in progress."""
    run_dir = tmp_path / "runs" / "task=bit_xor" / "settings=00000000"
    rows = metric_rows([0.5, 0.75, 0.9], train=[0.6, 0.8, 0.95])
    for r in rows:
        r |= {"stop_step": 20, "steps": 20, "wall_s": 3.0 + r["step"]}
    write_atomic(to_table(rows), run_dir / "metrics.parquet")
    write_atomic(to_table(rows[:2]), run_dir / "progress.parquet")
    report = _status(capsys, "--results", tmp_path)
    assert report["counts"] == {"in_progress": 0, "finished": 1, "pending": 0, "unreadable": 0}
    (r,) = report["runs"]
    assert (r["state"], r["step"], r["accuracy"], r["wall_s"]) == ("finished", 20, 0.9, 23.0)


def test_config_lists_runs_not_started_as_pending(tmp_path, capsys):
    results = tmp_path / "res"
    config = {
        "results_dir": str(results),
        "defaults": {"backbone": "gpt2", "size": "tiny", "steps": 20, "batch_size": 4},
        "experiments": {
            "e": {
                "grid": {
                    "task": ["bit_xor"],
                    "backbone": ["gpt2"],
                    "init": ["random"],
                    "seed": [0, 1, 2],
                }
            }
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    from fpt.grid import expand, load_config

    runs = list(expand(load_config(path)).runs)
    assert len(runs) == 3
    # seed 0 has started (spec.json only, before its first evaluation); 1 and 2 have not
    (results / "runs" / runs[0]).mkdir(parents=True)
    (results / "runs" / runs[0] / "spec.json").write_text("{}")
    report = _status(capsys, "--config", path)  # results: the config's results_dir
    assert report["results"] == str(results)
    assert report["counts"] == {"in_progress": 1, "finished": 0, "pending": 2, "unreadable": 0}
    by = _by_run(report)
    assert by[runs[0]]["state"] == "in_progress" and by[runs[0]]["step"] is None
    assert [by[p]["state"] for p in runs[1:]] == ["pending", "pending"]
    assert by[runs[1]]["steps"] == 20


def test_truncated_progress_file_is_reported_unreadable(tmp_path, capsys):
    good = tmp_path / "runs" / "task=bit_xor" / "settings=11111111"
    bad = tmp_path / "runs" / "task=bit_xor" / "settings=22222222"
    rows = metric_rows([0.5, 0.75], train=[0.6, 0.8])
    for r in rows:
        r |= {"steps": 100, "wall_s": 1.0 + r["step"] / 2}  # 2 steps/s
    write_atomic(to_table(rows), good / "progress.parquet")
    blob = (good / "progress.parquet").read_bytes()
    bad.mkdir(parents=True)
    (bad / "progress.parquet").write_bytes(blob[: len(blob) // 2])

    report = _status(capsys, "--results", tmp_path)
    assert report["counts"] == {"in_progress": 2, "finished": 0, "pending": 0, "unreadable": 1}
    by = _by_run(report)
    assert "progress.parquet" in by[bad.relative_to(tmp_path / "runs").as_posix()]["unreadable"]
    ok = by[good.relative_to(tmp_path / "runs").as_posix()]
    assert (ok["unreadable"], ok["step"], ok["accuracy"], ok["steps_per_s"]) == (
        None,
        10,
        0.75,
        2.0,
    )
    assert ok["eta_s"] == 45

    capsys.readouterr()
    assert main(["status", "--results", str(tmp_path)]) == 0  # the text table
    text = capsys.readouterr().out
    assert "2 in progress, 0 finished, 0 pending, 1 unreadable" in text
    assert "UNREADABLE progress.parquet" in text
    assert "10/100" in text and "0.7500 test" in text


def test_squeue_summary_counts_jobs_by_state(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text("#!/bin/sh\nprintf 'RUNNING\\nPENDING\\nRUNNING\\n'\n")
    squeue.chmod(0o755)
    monkeypatch.setattr(shutil, "which", REAL_WHICH)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    slurm = _status(capsys, "--results", tmp_path)["slurm"]
    assert slurm["states"] == {"PENDING": 1, "RUNNING": 2} and slurm["jobs"] == 3
    assert ".snakemake/slurm_logs/" in slurm["hint"]
    capsys.readouterr()
    main(["status", "--results", str(tmp_path)])
    assert "slurm (squeue --me): 3 jobs: 1 PENDING, 2 RUNNING" in capsys.readouterr().out
