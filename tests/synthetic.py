"""Synthetic metric rows with known answers, for the table and figure builders."""

from __future__ import annotations

from typing import Any

from fpt.metrics import COLUMNS, SCHEMA_VERSION

AXES = {
    "task": "bit_xor",
    "backbone": "gpt2",
    "size": "small",
    "init": "pretrained",
    "trainable": "fpt",
    "depth": "all",
    "input_init": "orthogonal",
    "lr": 1e-3,
    "seed": 0,
}


def metric_rows(
    accs: list[float],
    *,
    split: str = "test",
    every: int = 10,
    diverged: bool = False,
    train: list[float] | None = None,
    **axes: Any,
) -> list[dict[str, Any]]:
    """One run's rows: `accs` on `split` at steps 0, every, 2*every, ... (and `train` on the
    train split at the same steps, when given)."""
    a = AXES | axes
    run = "/".join(f"{k}={a[k]}" for k in AXES)
    rows = []
    for sp, values in ((split, accs), ("train", train or [])):
        for i, acc in enumerate(values):
            rows.append(
                {c: None for c in COLUMNS}
                | a
                | {
                    "settings": "x",
                    "run": run,
                    "step": i * every,
                    "samples": i * every * 4,
                    "wall_s": 1.0,
                    "split": sp,
                    "loss": 0.1,
                    "accuracy": acc,
                    "diverged": diverged,
                    "trainable_params": 1000,
                    "total_params": 124_000_000,
                    "schema_version": SCHEMA_VERSION,
                }
            )
    return rows
