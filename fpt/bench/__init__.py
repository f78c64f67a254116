"""Benchmarks (BENCHMARKS.md): the training loop's speed and the pipeline's.

- `step`: `fpt bench`, the training/eval step timed against the matmul peak, a
  reference-style loop and ablations (`bench`, `step_flops`, `our_loop`, ...);
- `cache`: `fpt bench-cache`, output-only training uncached vs on cached features;
- `pipeline`: `fpt bench-collect` and `fpt bench-dryrun` (`scaled_config`: a config of N runs);
- `tables`: `fpt bench-tables`, rendering tables and figures from N synthetic runs;
- `scaling`: `fpt bench-scaling`, step time vs sequence length and model size;
- `report`: `python -m fpt.bench.report benchmarks/`, the tables BENCHMARKS.md quotes;
- `timing` (how things are timed), `fake_data` (image files without a download), `cli`.

The names below are imported from their module on first use, so `fpt` commands that
only register the bench options (fpt.cli) do not pay for torch and the loop.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "fpt.bench.step": (
        "ABLATIONS",
        "bench",
        "eval_rate",
        "forward_flops",
        "our_loop",
        "rates",
        "reference_step",
        "run_summary",
        "step_flops",
        "time_our_step",
    ),
    "fpt.bench.fake_data": ("fake_data_dir",),
    "fpt.bench.timing": ("interleaved", "machine", "matmul_peak", "sync", "timed"),
    "fpt.bench.cache": ("bench_cache",),
    "fpt.bench.pipeline": ("bench_collect", "bench_dryrun", "make_run_files", "scaled_config"),
    "fpt.bench.tables": ("bench_tables", "synthetic_metrics"),
    "fpt.bench.scaling": ("bench_scaling",),
    "fpt.bench.report": ("report",),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fpt.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
