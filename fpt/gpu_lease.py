"""One GPU per training job on a workstation, or `runs_per_gpu` jobs sharing one GPU.

Snakemake starts its train jobs side by side; without this every one of them would land on
cuda:0. Each job that will use CUDA leases one GPU *slot* first, then sees only that GPU:

    from fpt import gpu_lease

    with gpu_lease.lease(device, label=run_dir) as gpu:  # gpu: the leased id ("2") or None
        ...  # CUDA_VISIBLE_DEVICES=gpu here: the job's cuda:0 is the leased GPU

`lease(device, label)` is what `fpt train` (and any command that trains, such as a command
training several runs in one process) wraps its work in; it must run before anything
initialises CUDA in the process (importing torch does not; `torch.cuda.is_available()`,
allocating on the GPU or `torch.cuda.device_count()` without NVML do). On exit the lease is
released and CUDA_VISIBLE_DEVICES put back as it was.

No lease (None, the environment untouched) when:
- the device is "cpu";
- the process runs inside a SLURM job (SLURM_JOB_ID set) that was given at most one GPU: its
  CUDA_VISIBLE_DEVICES, set by SLURM, names the job's GPU (or none). A job or allocation given
  several (Snakemake run inside `salloc --gpus=8`, or a pack job on a whole node) leases among
  the inherited CUDA_VISIBLE_DEVICES, in a lease folder of that SLURM job's own;
- there are no GPUs to choose from.

Which GPUs (`visible_gpus`): the config key `gpus`, which the Snakefile exports to its jobs as
FPT_GPUS (`export`): a list of ids, "0,2" (as CUDA_VISIBLE_DEVICES numbers them: CUDA's
order, which is nvidia-smi's with CUDA_DEVICE_ORDER=PCI_BUS_ID), or "all" (the default, and
what an unset FPT_GPUS means): the entries of an inherited CUDA_VISIBLE_DEVICES if it is
set, else every GPU torch counts through NVML, without initialising CUDA here (where NVML
is missing the count is taken in a child process). Explicit ids need no torch at all, which
is how the tests lease fake GPUs on a machine without one.

How many jobs per GPU: the config key `runs_per_gpu` (FPT_RUNS_PER_GPU, default 1).

The leases: one lock file per (GPU, slot), `gpu-<id>.<slot>.lock` in the lease directory,
$FPT_GPU_LEASE_DIR or `<system temp dir>/fpt-gpu-leases-<uid>` (one per user: set
FPT_GPU_LEASE_DIR to a folder every user can write for users to share GPUs). A slot is held
by an exclusive `fcntl.flock` on its file, which the kernel drops when the holder ends
however it ends (kill -9 included), so a killed job frees its GPU. The holder writes who it
is (pid, host, run label, since when) into the file and empties it on release. Choosing is
serialised by a flock on `.select.lock` in the same folder: under it a job probes every
slot, takes a free one on the GPU with the fewest leases held (jobs spread over the GPUs
before they share one; ties go to the first GPU listed) and lets go. When every slot is
held it waits, polling, and logs once who holds what. These are local locks: the folder
must be on a local disk of the machine whose GPUs it shares (the default is).

Not a run setting: which GPU trained a run changes no run path or settings hash, and the
values travel as environment variables (FPT_GPUS, FPT_RUNS_PER_GPU, FPT_GPU_LEASE_DIR),
not as rule params, whose change would rerun every finished job.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("fpt.gpu_lease")

GPUS_ENV = "FPT_GPUS"  # "all" or "0,2"; the config's `gpus`
RUNS_PER_GPU_ENV = "FPT_RUNS_PER_GPU"  # an integer >= 1; the config's `runs_per_gpu`
DIR_ENV = "FPT_GPU_LEASE_DIR"  # where the lock files live
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
CONFIG_GPUS = "gpus"
CONFIG_RUNS_PER_GPU = "runs_per_gpu"
SELECT_LOCK = ".select.lock"
DEFAULT_POLL_S = 2.0


class GpuLeaseTimeout(TimeoutError):
    """No GPU slot came free within the time asked for (`lease(..., timeout_s=...)`)."""


# --- configuration: config keys -> environment -> this process -----------------------------


def export(gpus: str | Sequence[int], runs_per_gpu: int) -> None:
    """Put the config's `gpus` ("all" or a list of ids) and `runs_per_gpu` into this
    process's environment, so the processes it starts (Snakemake's jobs) lease from them."""
    os.environ[GPUS_ENV] = gpus if isinstance(gpus, str) else ",".join(str(int(g)) for g in gpus)
    os.environ[RUNS_PER_GPU_ENV] = str(int(runs_per_gpu))


def configured_gpus() -> list[str] | None:
    """The GPU ids FPT_GPUS names, or None for "all" (or unset). ValueError if malformed."""
    raw = os.environ.get(GPUS_ENV, "").strip()
    if raw in ("", "all"):
        return None
    ids = [part.strip() for part in raw.split(",")]
    if not all(re.fullmatch(r"\d+", i) for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(
            f"{GPUS_ENV}={raw!r}: expected 'all' or distinct GPU ids separated by commas, "
            f"e.g. 0,2 (the config key `{CONFIG_GPUS}`: all, or a list such as [0, 2])"
        )
    return [str(int(i)) for i in ids]


def runs_per_gpu() -> int:
    """How many jobs may share one GPU: FPT_RUNS_PER_GPU, default 1. ValueError if not >= 1."""
    raw = os.environ.get(RUNS_PER_GPU_ENV, "").strip()
    if raw == "":
        return 1
    if not re.fullmatch(r"\d+", raw) or int(raw) < 1:
        raise ValueError(
            f"{RUNS_PER_GPU_ENV}={raw!r}: expected an integer >= 1 (the config key "
            f"`{CONFIG_RUNS_PER_GPU}`: how many training jobs may share one GPU)"
        )
    return int(raw)


def _inherited_visible() -> list[str] | None:
    """The entries of an inherited CUDA_VISIBLE_DEVICES (None when unset). CUDA stops at
    the first invalid entry; a negative one ("-1", a common "no GPU") is one."""
    raw = os.environ.get(VISIBLE_ENV)
    if raw is None:
        return None
    out = []
    for part in raw.split(","):
        part = part.strip()
        if not part or part.startswith("-"):
            break
        out.append(part)
    return out


def _count_gpus() -> int:
    """How many GPUs torch can use, without initialising CUDA in this process: NVML (what
    torch.cuda.device_count() asks first), else a child process that asks torch."""
    import torch

    if not torch.backends.cuda.is_built():
        return 0
    nvml = getattr(torch.cuda, "_device_count_nvml", None)
    count = nvml() if nvml is not None else -1
    if count >= 0:
        return count
    code = "import torch; print(torch.cuda.device_count())"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
        )
        return int(out.stdout.strip()) if out.returncode == 0 else 0
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


def visible_gpus() -> list[str]:
    """The GPUs jobs lease from: inside a SLURM job, the GPUs SLURM gave it (its
    CUDA_VISIBLE_DEVICES); else FPT_GPUS's ids; with "all", an inherited
    CUDA_VISIBLE_DEVICES's entries, else every GPU torch counts (0..n-1)."""
    if os.environ.get("SLURM_JOB_ID"):
        return _inherited_visible() or []
    ids = configured_gpus()
    if ids is not None:
        return ids
    inherited = _inherited_visible()
    if inherited is not None:
        return inherited
    return [str(i) for i in range(_count_gpus())]


def skip_reason(device: str) -> str | None:
    """Why a job on `device` leases no GPU (None: it leases one, if there are GPUs)."""
    if device == "cpu":
        return "device cpu"
    job = os.environ.get("SLURM_JOB_ID")
    if job and len(_inherited_visible() or []) <= 1:
        return f"SLURM job {job} was given at most one GPU (CUDA_VISIBLE_DEVICES)"
    return None


def lease_dir() -> Path:
    """$FPT_GPU_LEASE_DIR, else one folder per user in the system's temp dir, one per SLURM
    job inside a job (two allocations on one node may number their GPUs alike)."""
    raw = os.environ.get(DIR_ENV)
    if raw:
        return Path(raw)
    job = os.environ.get("SLURM_JOB_ID")
    suffix = f"-slurm{job}" if job else ""
    return Path(tempfile.gettempdir()) / f"fpt-gpu-leases-{os.getuid()}{suffix}"


# --- the lock files ------------------------------------------------------------------------


def _file_token(gpu: str) -> str:
    """A GPU id as part of a file name (UUIDs and MIG ids keep their letters and dashes)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", gpu)


def _slot_path(folder: Path, gpu: str, slot: int) -> Path:
    return folder / f"gpu-{_file_token(gpu)}.{slot}.lock"


def _slots_on_disk(folder: Path, gpu: str) -> set[int]:
    """Slots of `gpu` that have a lock file (held ones among them), whatever runs_per_gpu
    the jobs that made them had."""
    prefix = f"gpu-{_file_token(gpu)}."
    out = set()
    for path in folder.glob(f"{_glob_escape(prefix)}*.lock"):
        middle = path.name[len(prefix) : -len(".lock")]
        if middle.isdigit():
            out.add(int(middle))
    return out


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?[])", r"[\1]", text)


def _open(path: Path) -> int:
    """A descriptor of the lock file, made if missing; read-only where another user made it
    and it is not ours to write (flock needs no write access; the holder's name is then not
    written)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _holder(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def describe(gpu: str, slot: int, who: dict[str, Any] | None) -> str:
    """'GPU 2 slot 0: pid 4242 on host n1, run results/runs/..., since ...'."""
    if not who:
        return f"GPU {gpu} slot {slot}: a process that has not written its name"
    return (
        f"GPU {gpu} slot {slot}: pid {who.get('pid')} on host {who.get('host')}, "
        f"run {who.get('run')}, since {who.get('since')}"
    )


@dataclass
class Lease:
    """A held GPU slot: the GPU's id, the slot, and the descriptor whose flock holds it."""

    gpu: str
    slot: int
    path: Path
    fd: int | None

    def release(self) -> None:
        """Empty the holder's name and drop the lock (closing its only descriptor)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)
        self.fd = None


def _try_acquire(folder: Path, gpus: Sequence[str], per_gpu: int, label: str):
    """Under the selection lock: take a free slot on the GPU with the fewest leases held.
    Returns the Lease, or the list of held slots' descriptions when every slot is taken."""
    select = _open(folder / SELECT_LOCK)
    try:
        fcntl.flock(select, fcntl.LOCK_EX)
        free: dict[str, dict[int, int]] = {}  # gpu -> slot -> descriptor we lock it with
        busy: dict[str, list[int]] = {}
        try:
            for gpu in gpus:
                free[gpu], busy[gpu] = {}, []
                for slot in sorted(set(range(per_gpu)) | _slots_on_disk(folder, gpu)):
                    fd = _open(_slot_path(folder, gpu, slot))
                    if _try_lock(fd):
                        free[gpu][slot] = fd
                    else:
                        os.close(fd)
                        busy[gpu].append(slot)
            open_gpus = [g for g in gpus if len(busy[g]) < per_gpu]
            if not open_gpus:
                return [
                    describe(g, s, _holder(_slot_path(folder, g, s))) for g in gpus for s in busy[g]
                ]
            gpu = min(open_gpus, key=lambda g: len(busy[g]))  # min keeps the first of ties
            slot = min(s for s in free[gpu] if s < per_gpu)
            fd = free[gpu].pop(slot)
            who = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "run": label,
                "gpu": gpu,
                "slot": slot,
                "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            }
            with contextlib.suppress(OSError):  # a read-only file: the lock holds all the same
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(who).encode(), 0)
            return Lease(gpu, slot, _slot_path(folder, gpu, slot), fd)
        finally:
            for slots in free.values():
                for fd in slots.values():
                    os.close(fd)
    finally:
        os.close(select)


def acquire(
    gpus: Sequence[str],
    label: str,
    *,
    per_gpu: int | None = None,
    poll_s: float = DEFAULT_POLL_S,
    timeout_s: float | None = None,
) -> Lease:
    """Lease a slot on one of `gpus` (the least leased first), waiting while all
    `per_gpu` (default: runs_per_gpu()) slots of every GPU are held; `label` names the
    holder (the run) to jobs that wait. GpuLeaseTimeout after `timeout_s` (None: wait)."""
    if not gpus:
        raise ValueError("no GPUs to lease from")
    per_gpu = runs_per_gpu() if per_gpu is None else per_gpu
    folder = lease_dir()
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    logged = False
    while True:
        got = _try_acquire(folder, gpus, per_gpu, label)
        if isinstance(got, Lease):
            log.info(
                "%s: leased GPU %s (slot %d of %d per GPU; lock %s)",
                label,
                got.gpu,
                got.slot,
                per_gpu,
                got.path,
            )
            return got
        waited = time.monotonic() - start
        if timeout_s is not None and waited >= timeout_s:
            raise GpuLeaseTimeout(
                f"{label}: no GPU slot came free in {timeout_s:g} s; held: " + "; ".join(got)
            )
        if not logged:
            log.warning(
                "%s: waiting for a GPU: all %d slot(s) of GPU(s) %s are leased (%s=%d): %s",
                label,
                per_gpu * len(gpus),
                ",".join(gpus),
                RUNS_PER_GPU_ENV,
                per_gpu,
                "; ".join(got),
            )
            logged = True
        time.sleep(poll_s)


@contextlib.contextmanager
def lease(
    device: str,
    label: str,
    *,
    poll_s: float = DEFAULT_POLL_S,
    timeout_s: float | None = None,
) -> Iterator[str | None]:
    """Hold one GPU slot for the block and show the process only that GPU
    (CUDA_VISIBLE_DEVICES=<id>, so it is cuda:0); yields the GPU's id, or None where no
    lease is taken (device cpu, a SLURM job, no GPUs; the environment is then untouched).
    `device`: auto, cpu or cuda, as `fpt train --device`. `label`: the holder's name shown
    to waiting jobs (the run folder). Enter it before anything initialises CUDA."""
    reason = skip_reason(device)
    gpus = [] if reason else visible_gpus()
    if not gpus:
        log.debug("%s: no GPU lease (%s)", label, reason or "no GPUs")
        yield None
        return
    held = acquire(gpus, label, poll_s=poll_s, timeout_s=timeout_s)
    before = os.environ.get(VISIBLE_ENV)
    os.environ[VISIBLE_ENV] = held.gpu
    try:
        yield held.gpu
    finally:
        if before is None:
            os.environ.pop(VISIBLE_ENV, None)
        else:
            os.environ[VISIBLE_ENV] = before
        held.release()
