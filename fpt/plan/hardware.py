"""What the times are computed for: the config's `estimate` block (its defaults are the
schema's, fpt/schemas/config.schema.yaml) and this machine's measured CPU matmul peak."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from fpt.plan.gpus import GPUS
from fpt.schema import fill_defaults, schema_file


@cache
def _estimate_defaults() -> tuple[tuple[str, Any], ...]:
    return tuple(fill_defaults({}, schema_file()["properties"]["estimate"]).items())


def estimate_defaults() -> dict[str, Any]:
    """The defaults of the config's `estimate` block, as the schema states them."""
    return dict(_estimate_defaults())


_DEFAULTS = estimate_defaults()  # the Hardware fields' defaults below
DEFAULT_GPU: str = _DEFAULTS["gpu"]
DEFAULT_PACK_SIZE = 8  # the fused figure's pack when the config does not pack (pack_size 1)


@cache
def cpu_peak(width: int, threads: int | None = None, seconds: float = 0.1) -> float:
    """fp32 matmul FLOP/s of this machine at a model's width: (256 x width) @ (width x
    4 width) (a batch of 4 x 64 tokens through a feed-forward's first layer), best of a few
    within `seconds`, with `threads` torch threads (then restored). Cached per process."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        m, k, n = 256, width, 4 * width
        gen = torch.Generator().manual_seed(0)  # not the global RNG: nothing else changes
        a, b = torch.rand(m, k, generator=gen), torch.rand(k, n, generator=gen)
        out = torch.empty(m, n)
        torch.mm(a, b, out=out)  # warm
        best, start = math.inf, time.perf_counter()
        for i in range(1000):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - t0)
            if i >= 2 and time.perf_counter() - start > seconds:
                break
        return 2 * m * k * n / max(best, 1e-9)
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Hardware:
    """What the times are computed for (fpt.plan's docstring has the model); the defaults
    are the `estimate` block's."""

    gpu: str = DEFAULT_GPU
    mfu: float = _DEFAULTS["gpu_mfu"]
    launch_us: float = _DEFAULTS["launch_us"]
    cpu_fraction: float = _DEFAULTS["cpu_fraction"]
    cpu_op_us: float = _DEFAULTS["cpu_op_us"]
    cpu_gflops: float | None = _DEFAULTS["cpu_gflops"]  # None: measured (cpu_peak)
    threads: int | None = None  # torch threads of a CPU job (the config's train_threads)
    pack_size: int = DEFAULT_PACK_SIZE

    def __post_init__(self) -> None:
        if self.gpu not in GPUS:
            raise ValueError(f"unknown GPU {self.gpu!r}; known: {', '.join(GPUS)}")
        for name in ("mfu", "cpu_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], not {getattr(self, name)}")
        if self.pack_size < 1:
            raise ValueError(f"pack_size must be >= 1, not {self.pack_size}")

    def cpu_peak(self, width: int) -> float:
        if self.cpu_gflops:
            return self.cpu_gflops * 1e9
        return cpu_peak(width, self.threads)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> Hardware:
        """The config's `estimate` block (defaults filled), its `train_threads` and its
        `pack_size` (the fused figure: DEFAULT_PACK_SIZE when the config does not pack), then
        `overrides` (None values ignored)."""
        est = estimate_of(config)
        pack = int(config.get("pack_size", 1) or 1)
        values = {
            "gpu": est["gpu"],
            "mfu": est["gpu_mfu"],
            "launch_us": est["launch_us"],
            "cpu_fraction": est["cpu_fraction"],
            "cpu_op_us": est["cpu_op_us"],
            "cpu_gflops": est["cpu_gflops"],
            "threads": config.get("train_threads"),
            "pack_size": pack if pack > 1 else DEFAULT_PACK_SIZE,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def estimate_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config`'s `estimate` block over the schema's defaults."""
    return {**estimate_defaults(), **(config.get("estimate") or {})}
