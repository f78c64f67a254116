"""The `precision` setting: which arithmetic a run trains and evaluates in.

- `fp32` (default): plain float32 everywhere, as the paper trained. On CUDA, TF32 tensor-core
  matmuls and cuDNN convolutions/LSTMs are switched off (cuDNN allows TF32 by default):
  `fp32_precision = "ieee"` for cuBLAS and cuDNN (`set_tf32`).
- `tf32`: float32 storage with TF32 matmuls and cuDNN on CUDA (about 10 mantissa bits in the
  products); a CUDA mode only: on a CPU it would be fp32 under another name, so it is refused.
- `bf16`: bfloat16 autocast for the forward pass (weights, optimizer and loss stay float32),
  on CUDA or CPU.

The setting is part of the run's identity (fpt.spec) and is recorded in every metrics row
beside the device's name, so a table never mixes precisions silently.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from fpt.spec import PRECISIONS

Autocast = Callable[[], AbstractContextManager]


def configure(precision: str, device: torch.device) -> Autocast:
    """Set the process's matmul modes for `precision` on `device` and return the autocast
    context factory the loop wraps each forward pass in."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError(
            "precision tf32 is a CUDA matmul mode; on the CPU use precision fp32 (the same "
            "arithmetic) or bf16"
        )
    if device.type == "cuda":  # process-wide switches: a training process runs one run
        set_tf32(precision == "tf32")
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


def set_tf32(on: bool) -> None:
    """TF32 for float32 matmuls (cuBLAS) and cuDNN on or off, through the API the installed
    torch has: `fp32_precision` ("tf32" / "ieee") where it exists (torch >= 2.9, which warns
    about the legacy `allow_tf32` flags and raises when the two are mixed), else the flags."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(cudnn, "fp32_precision"):
        matmul.fp32_precision = cudnn.fp32_precision = "tf32" if on else "ieee"
    else:
        matmul.allow_tf32 = cudnn.allow_tf32 = on


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA, else the CPU's model name (recorded with every metrics row)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"
