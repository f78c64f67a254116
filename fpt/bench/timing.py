"""How the benchmarks time things, and what they record about the machine: device syncs,
median-of-N timing, round-robin timing of several loops, the measured matmul peak, and the
load average a figure was taken under."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def sync(dev: torch.device) -> None:
    """Wait for the device's queued work (CUDA is asynchronous; a CPU needs nothing)."""
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], iters: int, dev: torch.device) -> float:
    """Median seconds per call: robust to bursts of other work on a shared machine."""
    times = []
    for _ in range(iters):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved(
    steps: dict[str, Callable[[], object]], warmup: int, iters: int, dev: torch.device
) -> dict[str, dict[str, float]]:
    """Warm every loop, then time them round-robin, one step each per round: a change in the
    machine's load during the run hits every loop alike, so their ratios stay fair. Per loop:
    `warmup_s` (all warm-up steps) and `step_s` (the median timed step)."""
    out: dict[str, dict] = {}
    for name, fn in steps.items():
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(warmup):
            fn()
        sync(dev)
        out[name] = {"warmup_s": time.perf_counter() - t0, "times": []}
    for _ in range(iters):
        for name, fn in steps.items():
            out[name]["times"].append(timed(fn, 1, dev))
    for v in out.values():
        v["step_s"] = statistics.median(v.pop("times"))
    return out


def matmul_peak(dev: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Best dense matmul FLOP/s over a few square sizes, measured here and now."""
    best = 0.0
    sizes = (1024, 2048, 4096) if dev.type == "cpu" else (4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        torch.mm(a, b)
        sync(dev)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(sizes):
            torch.mm(a, b)
            reps += 1
            if dev.type == "cuda" and reps % 10:
                continue
            sync(dev)
        sync(dev)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was (load average: a figure taken
    while other work ran says so)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loadavg": list(os.getloadavg()),
    }
