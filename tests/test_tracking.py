"""Experiment tracking (fpt/tracking.py): off by default; each backend, with its offline or
file store, mirrors a real tiny run's evaluations (what metrics.parquet holds), a job killed
and resumed from its checkpoint included; a bad setting, a missing package and a failure
while logging."""

from __future__ import annotations

import dataclasses
import errno
import json
import socket
import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fpt import grid, schema, tracking
from fpt.metrics import read_run
from fpt.spec import RunSpec
from fpt.train import Loop, train
from tests.conftest import REPO

SPEC = RunSpec(
    task="bit_memory",
    backbone="gpt2",
    size="tiny",
    init="random",
    steps=40,
    batch_size=4,
    micro_batch_size=4,
    eval_every=10,
    ckpt_every=20,
    options={"val_size": 8, "test_size": 8},
)
KILL_AT = 30  # the first attempt dies after its evaluation at step 30; its checkpoint: 20


class Killed(Exception):
    """What kill -9 does to a job, in-process."""


def _train(out: Path) -> pd.DataFrame:
    return read_run(train(SPEC, out, device="cpu", threads=1, progress=False, handle_signals=False))


def _killed_and_resumed(
    tmp_path: Path, monkeypatch, backend: str, process_exit=lambda: None
) -> tuple[pd.DataFrame, Path]:
    """SPEC trained with `backend` into RESULTS/runs/<path> by two jobs: the first dies right
    after evaluating step KILL_AT (its process exits: the tracker's exit hook runs, then
    `process_exit`), the second resumes from the checkpoint at step 20 and evaluates step
    KILL_AT again. Returns the metrics and the tracking dir (its default,
    RESULTS/tracking/<backend>)."""
    monkeypatch.setenv(tracking.ENV, backend)  # a bare backend name: as `fpt train` by hand
    out = tmp_path / "results" / "runs" / SPEC.path
    opened: list[tracking.Tracker] = []
    real_open, real_advance = tracking.open_tracker, Loop.advance

    def open_tracker(spec, out_dir):
        opened.append(real_open(spec, out_dir))
        return opened[-1]

    def dies_at_kill(loop, *args, **kwargs):
        if loop.step == KILL_AT:
            raise Killed
        real_advance(loop, *args, **kwargs)

    monkeypatch.setattr(tracking, "open_tracker", open_tracker)
    monkeypatch.setattr(Loop, "advance", dies_at_kill)
    with pytest.raises(Killed):
        _train(out)
    opened[-1]._at_exit()  # the dying process's atexit
    process_exit()
    monkeypatch.setattr(Loop, "advance", real_advance)
    df = _train(out)
    assert len(opened) == 2 and opened[-1]._closed and not opened[-1]._failed
    return df, tmp_path / "results" / "tracking" / backend


def _expected(df: pd.DataFrame) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} as the trackers name them, from metrics.parquet's rows."""
    out: dict[str, dict[int, float]] = {}
    for row in df.to_dict("records"):
        for name in ("loss", "accuracy"):
            out.setdefault(f"{row['split']}/{name}", {})[row["step"]] = row[name]
        out.setdefault("wall_s", {})[row["step"]] = row["wall_s"]
    return out


def _check(
    logged: dict[str, list[tuple[int, float]]],
    df: pd.DataFrame,
    rel: float = 1e-12,
    first_wall_kept: bool = False,
) -> None:
    """Every metric logged once per evaluation, at its step, with metrics.parquet's value.
    `first_wall_kept`: the step both jobs evaluated kept the first job's values (MLflow, W&B
    skip a step the run holds), whose wall_s metrics.parquet does not have."""
    expected = _expected(df)
    assert set(logged) == set(expected)
    assert sorted(expected["val/loss"]) == list(range(0, 41, 10))
    for key, points in logged.items():
        steps = [s for s, _ in points]
        assert sorted(steps) == sorted(set(steps)) == sorted(expected[key]), key  # no repeats
        for step, value in points:
            if key == "wall_s" and step == KILL_AT and first_wall_kept:
                continue
            assert value == pytest.approx(expected[key][step], rel=rel), (key, step)


# --------------------------------------------------------------------------- off / setting


def test_tracking_is_off_by_default_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.ENV, raising=False)
    assert tracking.open_tracker(SPEC, tmp_path) is None
    monkeypatch.setenv(tracking.ENV, '{"backend": "none"}')
    assert tracking.open_tracker(SPEC, tmp_path) is None
    monkeypatch.delenv(tracking.ENV)
    short = dataclasses.replace(SPEC, steps=10, ckpt_every=10)
    out = tmp_path / "results" / "runs" / short.path
    train(short, out, device="cpu", threads=1, progress=False, handle_signals=False)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["runs"]
    assert not list(tmp_path.rglob("*tfevents*")) and not list(tmp_path.rglob("tracking"))


def test_the_setting_is_a_backend_name_or_json_and_bad_ones_are_named(monkeypatch):
    assert tracking.parse("tensorboard") == {"backend": "tensorboard"}
    assert tracking.parse(' {"backend": "mlflow", "dir": "/x", "project": "p"} ') == {
        "backend": "mlflow",
        "dir": "/x",
        "project": "p",
    }
    with pytest.raises(tracking.TrackingError, match="unknown tracking backend 'neptune'.*"):
        tracking.parse("neptune")
    with pytest.raises(tracking.TrackingError, match="allowed: none, tensorboard, mlflow, wandb"):
        tracking.parse('{"backend": "comet"}')
    with pytest.raises(tracking.TrackingError, match="unknown key.*uri"):
        tracking.parse('{"backend": "mlflow", "uri": "http://x"}')
    with pytest.raises(tracking.TrackingError, match="not valid JSON"):
        tracking.parse('{"backend": ')
    monkeypatch.setenv(tracking.ENV, "neptune")
    with pytest.raises(tracking.TrackingError, match="FPT_TRACKING='neptune'"):
        tracking.open_tracker(SPEC, Path("out"))


def test_the_schema_refuses_a_bad_backend_and_tracking_is_no_run_setting():
    raw = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    off = grid.validate_config(dict(raw), source="test")
    assert off["tracking"] == {"backend": "none"}
    on = grid.validate_config({**raw, "tracking": {"backend": "wandb"}}, source="test")
    assert sorted(grid.expand(off).runs) == sorted(grid.expand(on).runs)  # same run paths
    with pytest.raises(
        grid.ConfigError,
        match=r"invalid value at tracking\.backend: 'neptune' is not one of .*"
        r"Allowed values: none, tensorboard, mlflow, wandb\.",
    ):
        grid.validate_config({**raw, "tracking": {"backend": "neptune"}}, source="test")
    with pytest.raises(grid.ConfigError, match="Allowed keys here: backend, dir, project"):
        grid.validate_config({**raw, "tracking": {"backend": "mlflow", "uri": "x"}}, "test")
    enum = schema.schema_file()["properties"]["tracking"]["properties"]["backend"]["enum"]
    assert tuple(enum) == tracking.BACKENDS


def test_the_snakefile_exports_the_setting_to_its_jobs(tmp_path, monkeypatch):
    # what the Snakefile does (not a rule param: a new param would rerun every finished job)
    assert (
        'fpt_tracking.export(config["tracking"], config["results_dir"], config["label"])'
        in (REPO / "workflow" / "Snakefile").read_text()
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(tracking.ENV, "wandb")  # the config decides, not the shell
    tracking.export({"backend": "none"}, "results", "demo")
    assert tracking.from_env() == {"backend": "none"}
    value = json.loads(tracking.export({"backend": "mlflow"}, "results/demo", "demo"))
    assert value == {
        "backend": "mlflow",
        "dir": str(tmp_path / "results/demo/tracking/mlflow"),  # absolute: for any job's cwd
        "project": "demo",
    }
    tracking.export({"backend": "tensorboard", "dir": "tb", "project": "p"}, "results", "x")
    assert tracking.from_env() == {
        "backend": "tensorboard",
        "dir": str(tmp_path / "tb"),
        "project": "p",
    }


def test_the_default_dir_is_beside_the_runs():
    runs = Path("res") / "runs" / SPEC.path
    assert tracking.default_dir(SPEC, runs, "mlflow") == Path("res/tracking/mlflow")
    assert tracking.default_dir(SPEC, Path("/tmp/run"), "wandb") == Path("/tmp/run/tracking/wandb")


def test_a_missing_package_fails_at_job_start_naming_the_install_line(
    tmp_path, monkeypatch, capsys
):
    from fpt.cli import main

    monkeypatch.setattr(tracking.TensorBoardTracker, "module", "fpt_no_such_module")
    monkeypatch.setenv(tracking.ENV, "tensorboard")
    out = tmp_path / "run"
    argv = ["train", *SPEC.cli_args(), "--out", str(out), "--device", "cpu", "--threads", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs the Python package tensorboard" in err
    assert 'pip install -e ".[tracking]"' in err
    assert not (out / "checkpoint").exists() and not (out / "progress.parquet").exists()


def test_a_tracking_failure_mid_run_warns_and_training_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(tracking.ENV, "tensorboard")
    calls = []

    def full_disk(self, step, values):
        calls.append(step)
        if step >= 20:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracking.TensorBoardTracker, "_write", full_disk)
    with caplog.at_level("WARNING", logger="fpt.tracking"):
        df = _train(tmp_path / "results" / "runs" / SPEC.path)
    assert sorted(df["step"].unique()) == [0, 10, 20, 30, 40]  # trained to the end
    assert calls == [0, 10, 20]  # no more tracking after the failure
    assert "failed at step 20 (OSError: [Errno 28] No space left on device)" in caplog.text
    assert "training goes on" in caplog.text


# --------------------------------------------------------------------------- backends


def test_tensorboard_event_files_hold_the_runs_metrics(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    df, tb = _killed_and_resumed(tmp_path, monkeypatch, "tensorboard")
    logdir = tb / SPEC.path  # one folder per run
    files = sorted(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per job
    # the second job's file starts by purging the first's events from step KILL_AT on
    starts = [
        e.step
        for f in files
        for e in EventFileLoader(str(f)).Load()
        if e.HasField("session_log") and e.session_log.status == SessionLog.START
    ]
    assert starts == [KILL_AT]
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()  # drops the first job's events from its purge step (KILL_AT) on
    logged = {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }
    _check(logged, df, rel=1e-6)  # float32; wall_s too: the second job's replaced the first's
    assert "run/text_summary" in events.Tags()["tensors"]


def test_mlflow_file_store_holds_the_runs_metrics(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    df, store = _killed_and_resumed(tmp_path, monkeypatch, "mlflow")
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name(tracking.DEFAULT_PROJECT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the resumed job continued the run
    run = runs[0]
    assert run.info.run_name == SPEC.path and run.info.status == "FINISHED"
    assert run.data.tags[tracking.RUN_TAG] == SPEC.path
    assert run.data.params["settings"] == SPEC.settings_hash()
    assert float(run.data.params["lr"]) == SPEC.lr and run.data.params["task"] == SPEC.task
    logged = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in run.data.metrics
    }
    _check(logged, df, first_wall_kept=True)


def test_wandb_offline_run_holds_the_runs_metrics_without_the_network(tmp_path, monkeypatch):
    import wandb

    # Anything that tried the network would meet this listener (proxies, W&B's base URL) or
    # the guard on Python's sockets; the machine has no route out, so a try would hang.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    accepted, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "WANDB_BASE_URL"):
        monkeypatch.setenv(var, url)
    for var in ("NO_PROXY", "no_proxy", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    outside = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            outside.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    home = tmp_path / "home"  # wandb's own files (its service's logs...) must not land here
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", *tracking.WANDB_HOME_ENV):
        monkeypatch.delenv(var, raising=False)
    try:
        # the dying job's process ends its wandb-core service, which writes out what it holds
        df, wandb_dir = _killed_and_resumed(tmp_path, monkeypatch, "wandb", wandb.teardown)
        wandb.teardown()
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert not accepted and not outside

    files = sorted((wandb_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    run_id = tracking.WandbTracker(SPEC, wandb_dir, "fpt").base_id
    assert [f.name for f in files] == [f"run-{run_id}.wandb"] * 2  # one per job, one run id
    logged: dict[str, list[tuple[int, float]]] = {}
    for f in files:
        for row in tracking.wandb_offline_history(f):
            for key, value in row.items():
                if not key.startswith("_"):
                    logged.setdefault(key, []).append((row["_step"], value))
    _check(logged, df, first_wall_kept=True)
    assert not home.exists()
    assert (wandb_dir / "wandb-home").is_dir()


def test_wandb_a_run_trained_again_from_scratch_gets_a_new_run_id(tmp_path, monkeypatch):
    tracker = tracking.WandbTracker(SPEC, tmp_path, "fpt")
    tracker.close()  # never started: only its choice of run is used
    base = tracker.base_id
    assert tracker.pick_run(0) == (base, -1) and tracker.pick_run(30) == (base, -1)
    history = {base: [{"_step": 0}, {"_step": 10}], f"{base}-2": [{"_step": 0}]}
    monkeypatch.setattr(tracking, "wandb_offline_history", lambda f: history[f.stem[4:]])
    for n, name in enumerate([base, f"{base}-2"]):
        d = tmp_path / "wandb" / f"offline-run-2026010{n}_000000-{name}"
        d.mkdir(parents=True)
        (d / f"run-{name}.wandb").write_bytes(b"")
        assert [rid for rid, _ in tracker.attempts()] == [base, f"{base}-2"][: n + 1]
        if n == 0:
            assert tracker.pick_run(20) == (base, 10)  # resumed: the run and its last step
            assert tracker.pick_run(0) == (f"{base}-2", -1)  # from scratch: a new run
    assert tracker.pick_run(20) == (f"{base}-2", 0)
    assert tracker.pick_run(0) == (f"{base}-3", -1)
