"""Experiment tracking (fpt/tracking.py): off by default (nothing imported, nothing written);
a bad setting refused naming what is wrong; each backend holds a real tiny run's evaluations
(what metrics.parquet holds), read back through the library's public reader where it has
one, a job killed and resumed from its checkpoint continuing the same tracker run; a failure
while logging is a warning."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import subprocess
import sys
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
SHORT = dataclasses.replace(SPEC, steps=10, ckpt_every=10)
KILL_AT = 30  # the first job dies after its evaluation at step 30; its checkpoint: step 20
STEPS = [0, 10, 20, 30, 40]
LIBRARIES = ("tensorboard", "torch.utils.tensorboard", "mlflow", "wandb")


class Killed(Exception):
    """What kill -9 does to a job, in-process."""


def _train(out: Path) -> pd.DataFrame:
    return read_run(train(SPEC, out, device="cpu", threads=1, progress=False, handle_signals=False))


def _killed_and_resumed(tmp_path, monkeypatch, backend):
    """SPEC trained with `backend` into RESULTS/runs/<path> by two jobs: the first dies right
    after evaluating step KILL_AT (its tracker ends as a dying process's would), the second
    resumes from the checkpoint at step 20. Returns metrics.parquet's rows, both jobs'
    trackers and the tracking dir (its default, RESULTS/tracking/<backend>)."""
    monkeypatch.setenv(tracking.ENV, backend)  # a bare backend name: as `fpt train` by hand
    out = tmp_path / "results" / "runs" / SPEC.path
    opened: list[tracking.Tracker] = []
    real_open, real_advance = tracking.open_tracker, Loop.advance

    def dies_at_kill(loop, *args, **kwargs):
        if loop.step == KILL_AT:
            raise Killed
        real_advance(loop, *args, **kwargs)

    monkeypatch.setattr(
        tracking, "open_tracker", lambda *a: opened.append(real_open(*a)) or opened[-1]
    )
    monkeypatch.setattr(Loop, "advance", dies_at_kill)
    with pytest.raises(Killed):
        _train(out)
    opened[0].close(ok=False)  # what the dying process's exit does
    monkeypatch.setattr(Loop, "advance", real_advance)
    df = _train(out)
    assert len(opened) == 2 and opened[1].closed and not opened[1].failed
    return df, opened, tmp_path / "results" / "tracking" / backend


def _check(logged: dict[str, list[tuple[int, float]]], df: pd.DataFrame, repeated=(), rel=1e-12):
    """Every metric logged at each evaluation's step, only the steps in `repeated` twice, the
    last value logged at a step metrics.parquet's."""
    expected: dict[str, dict[int, float]] = {}
    for row in df.to_dict("records"):
        for name in ("loss", "accuracy"):
            expected.setdefault(f"{row['split']}/{name}", {})[row["step"]] = row[name]
        expected.setdefault("wall_s", {})[row["step"]] = row["wall_s"]
    assert set(logged) == set(expected) and sorted(expected["val/loss"]) == STEPS
    for key, points in logged.items():
        steps = [s for s, _ in points]
        assert sorted(set(steps)) == sorted(expected[key]), key
        assert {s for s in steps if steps.count(s) > 1} <= set(repeated), key
        for step, value in dict(points).items():  # the last value at each step
            assert value == pytest.approx(expected[key][step], rel=rel), (key, step)


# --------------------------------------------------------------------------- off / setting


def test_tracking_off_imports_no_tracker_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.ENV, '{"backend": "none"}')
    assert tracking.open_tracker(SPEC, tmp_path) is None
    out = tmp_path / "results" / "runs" / SHORT.path
    code = (
        "import sys; from pathlib import Path; from fpt.spec import RunSpec\n"
        "from fpt.train import train\n"
        f"spec = RunSpec.from_json({SHORT.to_json()!r})\n"
        f"train(spec, Path({str(out)!r}), device='cpu', threads=1, progress=False)\n"
        f"print([m for m in {LIBRARIES!r} if m in sys.modules])"
    )
    env = {k: v for k, v in os.environ.items() if k != tracking.ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["runs"]
    assert not list(tmp_path.rglob("*tfevents*"))


def test_a_bad_setting_is_refused_naming_what_is_wrong(monkeypatch):
    assert tracking.parse("tensorboard") == {"backend": "tensorboard"}
    assert tracking.parse(' {"backend": "mlflow", "dir": "/x", "project": "p"} ') == {
        "backend": "mlflow",
        "dir": "/x",
        "project": "p",
    }
    with pytest.raises(tracking.TrackingError, match="allowed: none, tensorboard, mlflow, wandb"):
        tracking.parse("neptune")
    with pytest.raises(tracking.TrackingError, match="unknown key.*uri"):
        tracking.parse('{"backend": "mlflow", "uri": "http://x"}')
    with pytest.raises(tracking.TrackingError, match="dir must be a string"):
        tracking.parse('{"backend": "mlflow", "dir": 3}')
    with pytest.raises(tracking.TrackingError, match="not valid JSON"):
        tracking.parse('{"backend": ')
    with pytest.raises(tracking.TrackingError, match="unknown key.*uri"):
        tracking.export({"backend": "mlflow", "uri": "x"}, "results", "demo")
    monkeypatch.setenv(tracking.ENV, "neptune")
    with pytest.raises(tracking.TrackingError, match="FPT_TRACKING='neptune'"):
        tracking.open_tracker(SPEC, Path("out"))


def test_the_schema_refuses_a_bad_backend_and_tracking_is_no_run_setting():
    raw = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    off = grid.validate_config(dict(raw), source="test")
    assert off["tracking"] == {"backend": "none"}
    on = grid.validate_config({**raw, "tracking": {"backend": "wandb"}}, source="test")
    assert sorted(grid.expand(off).runs) == sorted(grid.expand(on).runs)  # same run paths
    with pytest.raises(grid.ConfigError, match=r"invalid value at tracking\.backend: 'neptune'"):
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
    pytest.importorskip("tensorboard")
    monkeypatch.setenv(tracking.ENV, "tensorboard")
    calls = []

    def full_disk(self, step, values):
        calls.append(step)
        if step >= 20:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracking.TensorBoardTracker, "_write", full_disk)
    with caplog.at_level("WARNING", logger="fpt.tracking"):
        df = _train(tmp_path / "results" / "runs" / SPEC.path)
    assert sorted(df["step"].unique()) == STEPS  # trained to the end
    assert calls == [0, 10, 20]  # no more tracking after the failure
    assert "failed at step 20 (OSError: [Errno 28] No space left on device)" in caplog.text
    assert "training goes on" in caplog.text


# --------------------------------------------------------------------------- backends


def test_tensorboard_event_files_hold_the_runs_metrics(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    df, _, tb = _killed_and_resumed(tmp_path, monkeypatch, "tensorboard")
    logdir = tb / SPEC.path  # one folder per run, one event file per job
    assert len(list(logdir.glob("events.out.tfevents.*"))) == 2
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()  # purge_step: the first job's events from KILL_AT on are dropped
    logged = {t: [(e.step, e.value) for e in events.Scalars(t)] for t in events.Tags()["scalars"]}
    _check(logged, df, rel=1e-6)  # float32; wall_s too: the second job's replaced the first's
    assert "run/text_summary" in events.Tags()["tensors"]


def test_mlflow_file_store_holds_the_runs_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    df, opened, store = _killed_and_resumed(tmp_path, monkeypatch, "mlflow")
    assert opened[0].run_id == opened[1].run_id  # the resumed job continued the run
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name(tracking.DEFAULT_PROJECT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == SPEC.path and run.info.status == "FINISHED"
    assert run.data.tags[tracking.RUN_TAG] == SPEC.path
    assert run.data.params["settings"] == SPEC.settings_hash()
    assert float(run.data.params["lr"]) == SPEC.lr and run.data.params["task"] == SPEC.task
    logged = {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in run.data.metrics
    }
    _check(logged, df, repeated=[KILL_AT])  # both jobs logged step KILL_AT


def test_mlflow_a_job_from_step_0_starts_a_new_run_a_resumed_one_continues(tmp_path):
    pytest.importorskip("mlflow")
    row = {"split": "val", "loss": 1.0, "accuracy": 0.5, "wall_s": 1.0}
    ids = []
    for first in (0, 0, 10):
        tracker = tracking.MLflowTracker(SPEC, tmp_path, "p")
        tracker.log(first, [row])
        tracker.close()
        assert tracker.started and not tracker.failed
        ids.append(tracker.run_id)
    assert ids[0] != ids[1] == ids[2]


def test_wandb_offline_runs_hold_the_runs_metrics_without_the_network(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    # Anything that tried the network would meet this listener (proxies, W&B's base URL; its
    # service is no Python process) or the guard on Python's sockets.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    accepted, outside, stop = [], [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "WANDB_BASE_URL"):
        monkeypatch.setenv(var, url)
    for var in ("NO_PROXY", "no_proxy", "WANDB_API_KEY", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
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
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    try:
        df, opened, wandb_dir = _killed_and_resumed(tmp_path, monkeypatch, "wandb")
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert not accepted and not outside and not home.exists()

    run_id = opened[0].run.id
    assert opened[1].run.id == run_id  # the resumed job continued the run
    assert opened[1].run.config["settings"] == SPEC.settings_hash()
    # wandb has no public reader of an offline run (`wandb sync` uploads it): each job's
    # offline run folder holds its history file, which names the metrics it logged
    runs = sorted((wandb_dir / "wandb").glob("offline-run-*"))
    assert [r.name.endswith(f"-{run_id}") for r in runs] == [True, True]
    for r in runs:
        history = (r / f"run-{run_id}.wandb").read_bytes()
        assert all(key.encode() in history for key in ("val/loss", "test/accuracy", "wall_s"))
    assert sorted(set(df["step"])) == STEPS


def test_wandb_a_job_from_step_0_gets_a_new_run_id_a_resumed_one_the_newest(tmp_path):
    tracker = tracking.WandbTracker(SPEC, tmp_path, "fpt")
    base = tracker.run_id(0).split("-")[0]  # the path's; a time stamp makes each run new
    assert tracker.run_id(20).split("-")[0] == base  # nothing to resume: a new run
    for stamp, n in (("20260101_000000", 1), ("20260102_000000", 2)):
        (tmp_path / "wandb" / f"offline-run-{stamp}-{base}-{n}").mkdir(parents=True)
    assert tracker.run_id(20) == f"{base}-2"  # resumed: the newest offline run of the path
    assert tracker.run_id(0) not in (f"{base}-1", f"{base}-2")  # from step 0: a new run
    other = tracking.WandbTracker(dataclasses.replace(SPEC, seed=7), tmp_path, "fpt")
    assert not other.run_id(20).startswith(base)  # another run's folders are not its
