"""One trainer per run folder (fpt.runlock): the lock itself, and two `fpt train` processes on
one run folder: the second waits, exits EXIT_LOCKED naming the first and touches nothing;
the first ends with the metrics of an uninterrupted run; a SIGKILLed holder frees the run."""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from fpt import runlock
from fpt.metrics import read_run
from fpt.spec import RunSpec
from fpt.train import EXIT_LOCKED, train
from tests.test_train import _cli

SPEC = RunSpec(
    task="bit_xor",
    backbone="gpt2",
    size="tiny",
    init="random",
    depth=1,
    steps=300,
    batch_size=8,
    eval_every=50,
    ckpt_every=10,
    options={"val_size": 16, "test_size": 32},
)
COMPARE = ["step", "samples", "split", "loss", "accuracy", "diverged", "stop_step"]

# A process that takes the lock of argv[1] (with the environment it is given), says "held"
# and its pid, and keeps the lock until its stdin closes.
HOLDER = (
    "import sys\n"
    "from fpt import runlock\n"
    "lock = runlock.acquire(sys.argv[1], wait_s=0)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
    "lock.release()\n"
)


def _holder(run_dir, **env) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def _snapshot(folder) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder` (and the folder itself) with its mtime and bytes."""
    out = {".": (folder.stat().st_mtime_ns, b"")}
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(folder))] = (st.st_mtime_ns, p.read_bytes() if p.is_file() else b"")
    return out


# ---- the lock ----------------------------------------------------------------------------


def test_acquire_writes_the_holder_and_release_frees_it(tmp_path):
    with runlock.acquire(tmp_path / "run", wait_s=0) as lock:
        who = lock.holder()
        assert who["pid"] == os.getpid() and who["host"] == socket.gethostname()
        assert who == json.loads((tmp_path / "run" / ".lock").read_text())
        assert not lock.waited
        with pytest.raises(RuntimeError, match="already holds"):  # POSIX locks are per process
            runlock.acquire(tmp_path / "run", wait_s=0)
    assert (tmp_path / "run" / ".lock").read_text() == ""  # released: no holder named
    runlock.acquire(tmp_path / "run", wait_s=0).release()  # and free again


def test_a_lock_held_by_another_process_is_refused_naming_it(tmp_path):
    env = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2"}
    proc = _holder(tmp_path, **env)
    try:
        seen = []
        t0 = time.monotonic()
        with pytest.raises(runlock.RunLocked) as exc:
            runlock.acquire(tmp_path, wait_s=0.5, on_wait=seen.append)
        assert 0.5 <= time.monotonic() - t0 < 5
        assert exc.value.holder["pid"] == proc.pid and seen == [exc.value.holder]
        msg = str(exc.value)
        assert f"pid {proc.pid}" in msg and f"host {socket.gethostname()}" in msg
        assert "SLURM job 4242 (array 4240_2)" in msg and "scancel 4242" in msg
    finally:
        proc.communicate("")
    assert proc.returncode == 0
    runlock.acquire(tmp_path, wait_s=0).release()  # the holder released it


def test_a_waiter_gets_the_lock_once_the_holder_releases_it(tmp_path):
    proc = _holder(tmp_path)  # not a SLURM job: the fix is kill <pid>
    with pytest.raises(runlock.RunLocked, match=f"kill {proc.pid} "):
        runlock.acquire(tmp_path, wait_s=0)
    threading.Timer(0.5, proc.communicate, args=("",)).start()
    with runlock.acquire(tmp_path, wait_s=30) as lock:
        assert lock.waited and lock.holder()["pid"] == os.getpid()


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    proc = _holder(tmp_path)
    proc.kill()
    proc.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == proc.pid  # its record stays
    with runlock.acquire(tmp_path, wait_s=0) as lock:  # ... but the kernel dropped its lock
        assert not lock.waited and lock.holder()["pid"] == os.getpid()


def test_a_file_system_without_locks_is_an_error_unless_switched_off(tmp_path, monkeypatch):
    import errno

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(runlock.fcntl, "lockf", no_locks)
    with pytest.raises(runlock.LockUnsupported, match="FPT_RUN_LOCK=off"):
        runlock.acquire(tmp_path, wait_s=0)
    monkeypatch.setenv("FPT_RUN_LOCK", "off")
    with runlock.acquire(tmp_path, wait_s=0) as lock:
        assert lock.holder() is None


def test_the_default_wait_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("FPT_LOCK_WAIT", raising=False)
    assert runlock.default_wait() == 30
    monkeypatch.setenv("FPT_LOCK_WAIT", "2.5")
    assert runlock.default_wait() == 2.5
    monkeypatch.setenv("FPT_LOCK_WAIT", "soon")
    with pytest.raises(ValueError, match="FPT_LOCK_WAIT"):
        runlock.default_wait()


# ---- two trainers on one run folder ------------------------------------------------------


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The run trained without interruption (in process): its folder."""
    out = tmp_path_factory.mktemp("alone")
    train(SPEC, out, device="cpu", threads=1, handle_signals=False, lock_wait=0)
    return out


def _same_metrics(got, want) -> None:
    pd.testing.assert_frame_equal(
        read_run(got)[COMPARE].sort_values(COMPARE[:3]).reset_index(drop=True),
        read_run(want)[COMPARE].sort_values(COMPARE[:3]).reset_index(drop=True),
        check_exact=True,
    )


def _start_and_stop_once_checkpointed(out) -> subprocess.Popen:
    """`fpt train` into `out`, SIGSTOPped once it holds the lock and has a checkpoint (a
    stopped process keeps its lock): the moment of the race, held as long as needed."""
    proc = subprocess.Popen(
        _cli(SPEC, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    t0 = time.monotonic()
    while not (out / "checkpoint" / "ckpt.pt").exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() - t0 < 120
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)
    return proc


@pytest.mark.slow
def test_a_second_trainer_exits_73_naming_the_first_and_touches_nothing(tmp_path, alone):
    out = tmp_path / "run"
    first = _start_and_stop_once_checkpointed(out)
    try:
        before = _snapshot(out)
        second = subprocess.run(_cli(SPEC, out, "--lock-wait", "1"), capture_output=True, text=True)
        assert _snapshot(out) == before  # no checkpoint, metrics, progress or spec written
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == EXIT_LOCKED == 73, second.stderr[-3000:]
    err = second.stderr
    assert f"pid {first.pid}" in err and f"host {socket.gethostname()}" in err, err[-3000:]
    assert f"kill {first.pid}" in err and "waited 1 s" in err
    assert err.startswith("==== fpt train attempt: host ")  # the attempt's header line
    assert "resuming" not in err and not re.search(r"step \d+/", err)  # it trained nothing

    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    assert "waiting" not in stderr  # the first never waited: it held the lock throughout
    _same_metrics(out / "metrics.parquet", alone / "metrics.parquet")
    assert (out / ".lock").read_text() == ""  # released at the end


@pytest.mark.slow
def test_the_lock_dies_with_a_sigkilled_trainer_and_the_next_one_resumes(tmp_path, alone):
    out = tmp_path / "run"
    first = _start_and_stop_once_checkpointed(out)
    first.kill()  # kill -9 while it holds the lock
    first.communicate()
    step = _checkpoint_step(out)
    again = subprocess.run(_cli(SPEC, out, "--lock-wait", "0"), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {SPEC.path} from step {step}" in again.stderr
    assert "waiting" not in again.stderr  # the dead trainer's lock was gone at once
    _same_metrics(out / "metrics.parquet", alone / "metrics.parquet")


def _checkpoint_step(out) -> int:
    from fpt import checkpoint

    state = checkpoint.load_latest(out / "checkpoint", SPEC.to_json())
    assert state is not None and 0 < state["step"] < SPEC.steps
    return state["step"]


def test_a_trainer_that_waited_for_a_finishing_twin_returns_its_metrics(tmp_path, monkeypatch):
    """The twin finished while this one waited: its metrics.parquet is returned as it is,
    nothing trained or rewritten (a Snakemake job waiting for it then succeeds)."""
    spec = dataclasses.replace(SPEC, steps=20, eval_every=10)  # a second of training
    out = tmp_path / "run"
    train(spec, out, device="cpu", threads=1, handle_signals=False, lock_wait=0)
    proc = _holder(out)  # the twin, about to finish
    before = _snapshot(out)
    threading.Timer(0.3, proc.communicate, args=("",)).start()

    def no_setup(*a, **k):
        raise AssertionError("trained a finished run again")

    monkeypatch.setattr("fpt.train.setup", no_setup)
    assert train(spec, out, device="cpu", lock_wait=30) == out / "metrics.parquet"
    after = _snapshot(out)
    del before[".lock"], after[".lock"]  # the twin's record, emptied as it released
    assert after == before
