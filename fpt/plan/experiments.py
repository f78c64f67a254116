"""The plan of a config: each experiment's cost and the whole grid's (`Row`), where a run two
experiments share counts once, with every unique run's own figures (`Plan`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fpt.packs import pack_runs
from fpt.plan.cost import cpu_seconds, gpu_seconds, run_cost
from fpt.plan.gpus import GPUS
from fpt.plan.hardware import Hardware
from fpt.plan.memory import job_memory
from fpt.plan.shapes import model_shape, save_shape_cache
from fpt.spec import RunSpec


def packs(specs: Iterable[RunSpec], pack_size: int) -> list[list[RunSpec]]:
    """The training jobs of `specs`: the fused packs the grid makes of them (fpt.packs, at
    most `pack_size` runs each), then every other run alone."""
    runs = {s.path: s for s in specs}
    packed = pack_runs(runs, pack_size)
    in_packs = {p for paths in packed.values() for p in paths}
    return [[runs[p] for p in paths] for paths in packed.values()] + [
        [s] for path, s in runs.items() if path not in in_packs
    ]


@dataclass
class Row:
    """The cost of a set of runs (an experiment, or the whole grid's unique runs)."""

    name: str
    runs: int
    source_runs: int  # Bit Memory pretraining runs that its init=bit_memory runs need
    train_flops: float
    eval_flops: float
    cpu_s: float  # this machine, lone runs one after the other
    gpu_lone_s: float  # the named GPU, lone runs one after the other
    gpu_fused_s: float  # the named GPU, fused packs one after the other
    packs: int
    max_host_mb: float  # the largest lone run's host RAM (CPU job)
    max_device_mb: float  # the largest lone run's GPU memory

    @property
    def flops(self) -> float:
        return self.train_flops + self.eval_flops

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "flops": self.flops}


@dataclass
class Plan:
    source: str
    hardware: Hardware
    experiments: list[Row]
    total: Row
    runs: list[dict[str, Any]]  # per unique run
    cpu_peaks: dict[int, float]  # width -> measured (or given) fp32 FLOP/s

    def to_json(self, with_runs: bool = False) -> dict[str, Any]:
        gpu = GPUS[self.hardware.gpu]
        out = {
            "config": self.source,
            "hardware": {
                **dataclasses.asdict(self.hardware),
                "gpu_peaks_tflops": {
                    "bf16": gpu.bf16_tflops,
                    "tf32": gpu.tf32_tflops,
                    "fp32": gpu.fp32_tflops,
                },
                "gpu_memory_gb": gpu.memory_gb,
                "cpu_peak_gflops": {str(w): p / 1e9 for w, p in self.cpu_peaks.items()},
            },
            "experiments": [r.to_json() for r in self.experiments],
            "total": self.total.to_json(),
        }
        if with_runs:
            out["runs"] = self.runs
        return out


def _row(name: str, specs: list[RunSpec], n_runs: int, hw: Hardware, per_run: dict) -> Row:
    fused = sum(gpu_seconds([run_cost(s) for s in p], hw) for p in packs(specs, hw.pack_size))
    vals = [per_run[s.path] for s in specs]
    return Row(
        name=name,
        runs=n_runs,
        source_runs=len(specs) - n_runs,
        train_flops=sum(v["train_flops"] for v in vals),
        eval_flops=sum(v["eval_flops"] for v in vals),
        cpu_s=sum(v["cpu_s"] for v in vals),
        gpu_lone_s=sum(v["gpu_s"] for v in vals),
        gpu_fused_s=fused,
        packs=len(packs(specs, hw.pack_size)),
        max_host_mb=max((v["host_mb"] for v in vals), default=0.0),
        max_device_mb=max((v["device_mb"] for v in vals), default=0.0),
    )


def plan(config: Mapping[str, Any], hw: Hardware, source: str = "config") -> Plan:
    """The cost of every experiment of `config` (validated) and of its whole grid, where a
    run two experiments share counts once."""
    from fpt import grid as fpt_grid

    g = fpt_grid.expand(dict(config), source=source)
    per_run: dict[str, dict[str, Any]] = {}
    for path, spec in g.runs.items():
        c = run_cost(spec)
        mem = job_memory([spec])
        per_run[path] = {
            "run": path,
            "steps": c.steps,
            "evaluations": c.n_evals,
            "train_flops": c.train_flops,
            "eval_flops": c.total_eval_flops,
            "cpu_s": cpu_seconds([c], hw),
            "gpu_s": gpu_seconds([c], hw),
            "host_mb": mem["host_cpu"] / (1 << 20),
            "device_mb": mem["device"] / (1 << 20),
        }
    rows = []
    for name, paths in g.experiments.items():
        sources = list(dict.fromkeys(g.sources[p] for p in paths if p in g.sources))
        specs = [g.runs[p] for p in [*paths, *(s for s in sources if s not in paths)]]
        rows.append(_row(name, specs, len(paths), hw, per_run))
    total = _row("grid (unique runs)", list(g.runs.values()), len(g.runs), hw, per_run)
    widths = sorted({model_shape(s).width for s in g.runs.values()})
    save_shape_cache()
    return Plan(
        source,
        hw,
        rows,
        total,
        list(per_run.values()),
        {w: hw.cpu_peak(w) for w in widths},
    )
