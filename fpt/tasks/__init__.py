"""Task registry: config name -> task class. The schema's `task` enum must match it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fpt.tasks.base import Batch, HeadSpec, InputSpec, Task
from fpt.tasks.bits import BitMemory, BitXOR
from fpt.tasks.homology import RemoteHomology
from fpt.tasks.images import CIFAR10, CIFAR10LRA, MNIST, Digits
from fpt.tasks.listops import ListOps

TASKS: dict[str, type[Task]] = {
    "bit_memory": BitMemory,
    "bit_xor": BitXOR,
    "listops": ListOps,
    "mnist": MNIST,
    "cifar10": CIFAR10,
    "cifar10_lra": CIFAR10LRA,
    "homology": RemoteHomology,
    "digits": Digits,
}


def make_task(
    name: str,
    device: torch.device | str = "cpu",
    options: dict[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> Task:
    """Task `name` on `device`; `data_dir`: where its dataset files are (default `data`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](torch.device(device), options, data_dir)


__all__ = ["TASKS", "Batch", "HeadSpec", "InputSpec", "Task", "make_task"]
