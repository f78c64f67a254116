"""Optional experiment tracking: mirror each evaluation's metrics rows to TensorBoard, MLflow
or Weights & Biases (offline). Off by default. (Interface stub: filled in by issue 16.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpt.spec import RunSpec


class Tracker:
    """Receives a run's evaluation rows as they are recorded."""

    def log(self, step: int, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def open_tracker(spec: RunSpec, out_dir: Path) -> Tracker | None:
    """The tracker the environment's tracking setting asks for, for run `spec` writing to
    `out_dir`; None when tracking is off."""
    return None
