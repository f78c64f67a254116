"""`fpt bench-cache`: output-only training per epoch, uncached vs on cached features
(fpt.features). Prints JSON.

Per-step times are measured warm on the real training step (fpt.train.train_step, with the
model's optimizer, the run's precision and the loop's accumulator) in both ways; an epoch is
ceil(n_train / batch_size) steps of the task's full training split. The one-time cache build
(one eval-mode forward pass per example) is measured on the first `cache_examples` examples
of every split and scaled to the full dataset, so a GPT-2 pass over a whole dataset need not
run on a CPU to report it.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from fpt import precision
from fpt.bench.step import run_summary
from fpt.bench.timing import machine, timed
from fpt.features import CachedFeatures, Head, why_not
from fpt.spec import RunSpec
from fpt.train import Accumulator, build_run, resolve_device, train_step


def bench_cache(
    spec: RunSpec,
    device: str = "cpu",
    warmup: int = 2,
    iters: int = 5,
    cache_iters: int = 200,
    cache_examples: int = 128,
) -> dict[str, Any]:
    dev = resolve_device(device)
    load = list(os.getloadavg())
    _, task, model = build_run(spec, dev)
    reason = why_not(task, model)
    if reason is not None:
        raise ValueError(f"bench-cache: {spec.task}/{spec.trainable} cannot be cached: {reason}")
    full_sizes = {k: len(v) for k, v in task.splits.items()}
    autocast = precision.configure(spec.precision, dev)
    gen = torch.Generator(device=dev).manual_seed(spec.seed)

    def timed_steps(step_model, t, n_warm, n_iter) -> float:
        opt = model.configure_optimizers(spec.lr, dev)
        params = [p for group in opt.param_groups for p in group["params"]]
        acc = Accumulator(dev)

        def step():
            batch = t.train_batch(spec.batch_size, gen)
            train_step(step_model, t, batch, opt, params, spec.micro_batch_size, autocast, acc)

        for _ in range(n_warm):
            step()
        return timed(step, n_iter, dev)

    model.train()
    uncached_s = timed_steps(model, task, warmup, iters)  # today's output-only step

    # The cache over a subset of every split, timed and scaled to the full splits.
    task.splits = {
        k: v.take(torch.arange(min(len(v), cache_examples), device=dev))
        for k, v in task.splits.items()
    }
    sub = sum(len(v) for v in task.splits.values())
    t0 = time.perf_counter()
    cached = CachedFeatures(task, model, spec.eval_batch_size, autocast)
    build_sub_s = time.perf_counter() - t0
    build_s = build_sub_s * sum(full_sizes.values()) / sub
    cached_s = timed_steps(Head(model), cached, 20, cache_iters)

    steps = math.ceil(full_sizes["train"] / spec.batch_size)
    epoch_u, epoch_c = steps * uncached_s, steps * cached_s
    return {
        "run": run_summary(spec, task),
        "split_sizes": full_sizes,
        "steps_per_epoch": steps,
        "uncached_step_s": uncached_s,
        "cached_step_s": cached_s,
        "uncached_epoch_s": epoch_u,
        "cached_epoch_s": epoch_c,
        "speedup_per_epoch": epoch_u / epoch_c,
        "cache_build_s": build_s,
        "cache_build_measured": {"examples": sub, "seconds": build_sub_s},
        "speedup_first_epoch_with_build": epoch_u / (epoch_c + build_s),
        "machine": {**machine(), "loadavg_before": load},
    }
