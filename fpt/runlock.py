"""One trainer per run folder: an exclusive POSIX record lock on `<run>/.lock`.

`fpt.train.train()` takes it before it reads or writes anything in the run folder and holds it
until the run ends. A second trainer of the same run (a resubmitted job while an orphaned one
still runs, a SLURM requeue racing a Snakemake retry, a second `snakemake --nolock`) waits
up to `wait_s` seconds, polling, and then gives up with `RunLocked`, which names the holder
and the fix; `fpt train` exits with EXIT_LOCKED then, having touched nothing in the folder.

Why POSIX record locks (`fcntl.lockf`, i.e. fcntl F_SETLK on the whole file): the kernel drops
them when the holding process ends however it ends (kill -9 included), so a dead trainer never
leaves a stale lock; and they are the locks shared file systems carry between nodes: NFS (v3
through lockd/NLM, v4 in the protocol; not with the `nolock` or `local_lock=` mount options),
Lustre mounted with `-o flock` (with `localflock` a lock holds on its node only; with
`noflock` the call fails), GPFS / Spectrum Scale, BeeGFS with `tuneUseGlobalFileLocks = true`
(its default, false, locks per node only), CephFS. A file system that refuses the call
(ENOLCK, ENOSYS, EOPNOTSUPP) raises `LockUnsupported`: an error, not a silent no-op, since
training without the lock is how two trainers corrupt one run. Setting FPT_RUN_LOCK=off trains
without it (only where nothing else can train the same run). One that accepts the call but
keeps the lock per node (Lustre localflock, BeeGFS's default, NFS nolock) cannot be detected
from here: there the lock guards only against trainers on the same node.

Caveats of POSIX locks, which this module respects: the lock belongs to the process, and
closing ANY descriptor of the lock file in that process drops it, so the holder never opens
the file a second time (`holder()` reads through the locking descriptor); child processes do
not inherit it. A process asking twice for a lock it holds is refused (RuntimeError) instead
of being silently granted it again.

After taking the lock the holder writes who it is into the file (JSON: host, pid, SLURM job
id, SLURM array job/task ids, SLURM restart count, since when), and empties it on release,
so a waiting trainer can name the holder. The file itself stays (removing a lock file races
with a trainer that has just opened it).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("fpt.runlock")

LOCK_NAME = ".lock"
# `fpt train`'s exit status when another process holds the run: 73 is EX_CANTCREAT ("can't
# create output file"), distinct from 75 (preempted: the checkpoint is written, retry) and 2
# (bad arguments or configuration).
EXIT_LOCKED = 73
DEFAULT_WAIT_S = 30.0
WAIT_ENV = "FPT_LOCK_WAIT"  # the default of `fpt train --lock-wait`, e.g. for a whole workflow
DISABLE_ENV = "FPT_RUN_LOCK"  # "off": train without the lock (file systems without locks)

# errno of a lock call that the file system does not support (vs EACCES/EAGAIN: held)
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_HELD: set[str] = set()  # lock files this process holds (POSIX locks are per process)


def default_wait() -> float:
    """Seconds a trainer waits for a held run: $FPT_LOCK_WAIT, else DEFAULT_WAIT_S."""
    raw = os.environ.get(WAIT_ENV)
    if raw in (None, ""):
        return DEFAULT_WAIT_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{WAIT_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise ValueError(f"{WAIT_ENV}={raw!r} must be >= 0")
    return value


def identity() -> dict[str, Any]:
    """Who this process is: host, pid, SLURM ids where set, and the time now."""
    env = os.environ
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": env.get("SLURM_JOB_ID"),
        "slurm_array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "slurm_array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "slurm_restart_count": env.get("SLURM_RESTART_COUNT"),
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _slurm_job(who: dict[str, Any]) -> str | None:
    """'SLURM job 77 (array 70_3) requeued 2x', or None outside SLURM."""
    if not who.get("slurm_job_id"):
        return None
    job = f"SLURM job {who['slurm_job_id']}"
    if who.get("slurm_array_job_id"):
        job += f" (array {who['slurm_array_job_id']}_{who.get('slurm_array_task_id')})"
    if who.get("slurm_restart_count") not in (None, "", "0"):
        job += f" requeued {who['slurm_restart_count']}x"
    return job


def describe(who: dict[str, Any] | None) -> str:
    """`identity()` in words: 'host n1, pid 4242, SLURM job 77 (array 70_3), since ...'."""
    if not who:
        return "another process (it has not written its name into the lock file yet)"
    parts = [f"host {who.get('host')}", f"pid {who.get('pid')}"]
    parts.append(_slurm_job(who) or "not a SLURM job")
    return ", ".join(parts) + f", since {who.get('since')}"


def attempt_header(out_dir: str | Path) -> str:
    """The line `fpt train` prints first in every attempt, so that a log appended by every
    attempt of a run reads as a sequence: who started when, on which run folder."""
    who = identity()
    slurm = _slurm_job(who) or "no SLURM job"
    return (
        f"==== fpt train attempt: host {who['host']} pid {who['pid']} {slurm} "
        f"at {who['since']} run folder {out_dir} ===="
    )


def _fix(who: dict[str, Any] | None) -> str:
    if who and who.get("slurm_job_id"):
        return f"scancel {who['slurm_job_id']}"
    if who and who.get("pid"):
        return f"kill {who['pid']} (on host {who.get('host')})"
    return "find it with squeue --me / ps and stop it"


class RunLocked(RuntimeError):
    """Another process holds the run folder's lock; `holder` is what it wrote (or None)."""

    def __init__(self, run_dir: Path, holder: dict[str, Any] | None, waited_s: float) -> None:
        self.run_dir, self.holder, self.waited_s = run_dir, holder, waited_s
        super().__init__(
            f"{run_dir} is being trained by another process: {describe(holder)} (it holds "
            f"{run_dir / LOCK_NAME}; waited {waited_s:g} s). Nothing in the run folder was read "
            f"or written by this attempt. Wait for it to end, or cancel it: {_fix(holder)}; "
            "then run the same command again (the run resumes from its checkpoint)."
        )


class LockUnsupported(RuntimeError):
    """The file system of the run folder refuses POSIX record locks."""


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 65536, 0)
        who = json.loads(data.decode()) if data.strip() else None
    except (OSError, ValueError):
        return None
    return who if isinstance(who, dict) else None


class RunLock:
    """A held lock on `path` (`acquire` returns it). `waited`: another process held it when
    asked (so it may have finished the run meanwhile). Release with `release()` or `with`."""

    def __init__(self, path: Path, fd: int | None, who: dict[str, Any], waited: bool) -> None:
        self.path, self._fd, self.who, self.waited = path, fd, who, waited

    def holder(self) -> dict[str, Any] | None:
        """What the lock file says (this process's identity while held)."""
        return None if self._fd is None else _read_holder(self._fd)

    def release(self) -> None:
        """Empty the holder record, unlock, close. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD.discard(str(self.path))
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(
    run_dir: str | Path,
    wait_s: float = DEFAULT_WAIT_S,
    poll_s: float | None = None,
    on_wait: Callable[[dict[str, Any] | None], None] | None = None,
) -> RunLock:
    """Take `run_dir`/.lock exclusively, waiting up to `wait_s` seconds (polling every
    `poll_s`, by default wait_s/20 within 0.05..1 s) while another process holds it; then
    raise RunLocked naming the holder. Creates `run_dir` and the lock file if missing and
    changes nothing else there until the lock is held. `on_wait(holder)` is called once
    when the wait begins. FPT_RUN_LOCK=off returns a lock that holds nothing."""
    run_dir = Path(run_dir)
    path = (run_dir / LOCK_NAME).absolute()
    if os.environ.get(DISABLE_ENV, "").lower() in ("off", "0", "no", "false"):
        log.warning("%s=off: training %s without the run lock", DISABLE_ENV, run_dir)
        return RunLock(path, None, identity(), waited=False)
    if str(path) in _HELD:
        raise RuntimeError(f"this process already holds {path}")
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    poll = poll_s if poll_s is not None else min(1.0, max(0.05, wait_s / 20))
    t0 = time.monotonic()
    waited = False
    try:
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno in _UNSUPPORTED:
                    raise LockUnsupported(
                        f"the file system of {run_dir} refuses POSIX record locks on {path} "
                        f"({os.strerror(exc.errno)}), so fpt cannot make sure that only one "
                        "process trains this run. Fix: put results_dir on a file system with "
                        "locks (local disk; NFS with lockd, without -o nolock; Lustre mounted "
                        "with -o flock; GPFS; BeeGFS with tuneUseGlobalFileLocks), or, if "
                        f"nothing else can train this run, set {DISABLE_ENV}=off"
                    ) from exc
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
            elapsed = time.monotonic() - t0
            if not waited:
                waited = True
                if on_wait is not None:
                    on_wait(_read_holder(fd))
            if elapsed >= wait_s:
                raise RunLocked(run_dir, _read_holder(fd), wait_s)
            time.sleep(min(poll, max(0.0, wait_s - elapsed)))
        who = identity()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(who, sort_keys=True) + "\n").encode(), 0)
        with contextlib.suppress(OSError):
            os.fsync(fd)  # visible to a waiter on another node before it reads
    except BaseException:
        os.close(fd)  # drops the lock too, if it was taken
        raise
    _HELD.add(str(path))
    return RunLock(path, fd, who, waited)
