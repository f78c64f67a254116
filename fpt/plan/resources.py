"""What a training job asks SLURM for (the workflow's train rule, through
`fpt.workflow_support.train_resources`): the estimate x the `estimate` block's safety factors,
or the config's flat `train_runtime_min` / `train_mem_mb`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fpt.plan.cost import cpu_seconds, gpu_seconds, run_cost
from fpt.plan.hardware import Hardware, estimate_of
from fpt.plan.memory import job_memory
from fpt.spec import RunSpec

STARTUP_S = 120  # a job's imports, data loading and weight loading, before its first step
MIN_RUNTIME_MIN = 5

_JOBS: dict[tuple, dict[str, int]] = {}  # job_resources' answers, by job


def _config_key(config: Mapping[str, Any]) -> str:
    keys = ("device", "train_threads", "train_runtime_min", "train_mem_mb", "estimate")
    return json.dumps({k: config.get(k) for k in keys}, sort_keys=True, default=str)


def job_resources(specs: Sequence[RunSpec], config: Mapping[str, Any]) -> dict[str, int]:
    """{"runtime": minutes, "mem_mb": MB} for one job training `specs` (one spec: a lone
    run; several of one backbone: a fused pack) under `config` (validated: its defaults
    filled). `train_runtime_min` / `train_mem_mb`: "auto" = the estimate with the safety
    factors of the `estimate` block, a number = that number. Device cpu: the CPU model with
    `train_threads` threads; otherwise the `estimate.gpu` model. Cached per job."""
    key = (tuple(s.path for s in specs), _config_key(config))
    out = _JOBS.get(key)
    if out is not None:
        return dict(out)
    if not specs:
        raise ValueError("a training job trains at least one run")
    est = estimate_of(config)
    runtime, mem = (
        config.get("train_runtime_min", "auto"),
        config.get("train_mem_mb", "auto"),
    )
    on_cpu = config.get("device") == "cpu"
    if runtime == "auto":
        hw = Hardware.from_config(config)
        costs = [run_cost(s) for s in specs]
        secs = cpu_seconds(costs, hw) if on_cpu else gpu_seconds(costs, hw)
        runtime = math.ceil((secs * float(est["runtime_safety"]) + STARTUP_S) / 60)
        runtime = max(MIN_RUNTIME_MIN, runtime)
    if mem == "auto":
        need = job_memory(specs)["host_cpu" if on_cpu else "host_gpu"]
        mem = 100 * math.ceil(need * float(est["mem_safety"]) / (1 << 20) / 100)
    out = _JOBS[key] = {"runtime": int(runtime), "mem_mb": int(mem)}
    return dict(out)
