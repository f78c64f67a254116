"""`fpt bench-fused`: runs x steps per second of a pack of runs trained fused (fpt.fused) vs
the same runs stepped one after another as lone runs, at the paper's shapes.

Both sides are the training loop's own pieces: lone = each run's fpt.train.Loop.advance;
fused = fpt.fused.fused_step over a fpt.fused.Pack of loops built the same way. Two kinds of
pack: `shared` frozen weights (runs differing in lr, or pretrained runs differing in seed:
the frozen backbone is held once and its matmuls see every run's tokens at once) and
`per_run` frozen weights (random backbones of different seeds: stacked, the matmuls become
batched matmuls). Pretrained GPT-2 weights are not on this machine, so `shared` uses a random
backbone of one seed, whose frozen weights every run shares exactly as pretrained ones are:
the same arithmetic. Timed round-robin (fpt.bench.timing.interleaved), median of `iters`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch

from fpt.bench.fake_data import fake_data_dir
from fpt.bench.timing import interleaved, machine
from fpt.fused import Pack, fused_step
from fpt.spec import RunSpec
from fpt.train import Loop, build_run, resolve_device

KINDS = ("shared", "per_run")


def pack_specs(spec: RunSpec, runs: int, kind: str) -> list[RunSpec]:
    """`runs` specs of a pack: lrs of one seed (`shared`) or seeds (`per_run`)."""
    if kind == "shared":
        return [dataclasses.replace(spec, lr=spec.lr * 0.5**i) for i in range(runs)]
    return [dataclasses.replace(spec, seed=spec.seed + i) for i in range(runs)]


def _loops(specs: list[RunSpec], dev: torch.device, data_dir: Path | None) -> list[Loop]:
    loops = []
    for s in specs:
        _, task, model = build_run(s, dev, data_dir=data_dir)
        loop = Loop(s, task, model, dev)
        loop.use_own_dropout_rng()
        loops.append(loop)
    return loops


def bench_fused(
    spec: RunSpec,
    runs: int,
    kind: str,
    device: str = "cpu",
    warmup: int = 2,
    iters: int = 10,
) -> dict[str, Any]:
    """Runs x steps per second, lone and fused, for a pack of `runs` runs like `spec`."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}; use one of {KINDS}")
    dev = resolve_device(device)
    specs = pack_specs(spec, runs, kind)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = fake_data_dir(spec.task, Path(tmp)) if spec.task.startswith("cifar") else None
        lone = _loops(specs, dev, data_dir)
        fused_loops = _loops(specs, dev, data_dir)
        pack = Pack(fused_loops)
        everyone = list(range(runs))

        def lone_steps() -> None:
            for loop in lone:
                loop.advance()

        def fused_steps() -> None:
            batches = [
                loop.task.train_batch(loop.spec.batch_size, loop.generator) for loop in fused_loops
            ]
            fused_step(pack, everyone, batches)

        t = interleaved({"lone": lone_steps, "fused": fused_steps}, warmup, iters, dev)
    rates = {k: runs / v["step_s"] for k, v in t.items()}
    return {
        "task": spec.task,
        "backbone": spec.backbone,
        "size": spec.size,
        "batch_size": spec.batch_size,
        "trainable": spec.trainable,
        "runs": runs,
        "frozen_weights": kind,
        "lone_run_steps_per_s": rates["lone"],
        "fused_run_steps_per_s": rates["fused"],
        "speedup": rates["fused"] / rates["lone"],
        "threads": torch.get_num_threads(),
        "machine": machine(),
    }
