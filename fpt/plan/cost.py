"""The cost of a run: its FLOPs and kernels per step, per evaluation and in total (`RunCost`),
and the seconds they take on this CPU or a named GPU (fpt.plan's docstring has the model)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fpt.plan.gpus import GPUS
from fpt.plan.hardware import Hardware
from fpt.plan.kernels import BATCH_KERNELS, LOSS_KERNELS
from fpt.plan.shapes import model_shape
from fpt.plan.splits import split_sizes
from fpt.spec import RunSpec


def n_evaluations(steps: int, eval_every: int) -> int:
    """Evaluations of a run (fpt.train.run_steps): at step 0, every eval_every, and the end."""
    return 1 + steps // eval_every + (1 if steps % eval_every else 0)


@dataclass(frozen=True)
class RunCost:
    """One run's work: per step, per evaluation, and in total (FLOPs)."""

    steps: int
    n_evals: int
    step_flops: float
    step_kernels: int
    eval_flops: float  # one evaluation over every eval split
    eval_kernels: int  # one evaluation
    once_flops: float  # one-time work (the feature cache of cache_features runs)
    precision: str
    width: int

    @property
    def train_flops(self) -> float:
        return self.steps * self.step_flops + self.once_flops

    @property
    def total_eval_flops(self) -> float:
        return self.n_evals * self.eval_flops


def run_cost(spec: RunSpec, steps: int | None = None, n_evals: int | None = None) -> RunCost:
    """`spec`'s cost over its whole step budget (or `steps` / `n_evals` given, e.g. where a
    finished run stopped early)."""
    shape = model_shape(spec)
    steps = spec.steps if steps is None else steps
    n_evals = n_evaluations(steps, spec.eval_every) if n_evals is None else n_evals
    sizes = split_sizes(spec.task, spec.options)
    evals = {s: n for s, n in sizes.items() if s != "train"}
    micro = min(spec.micro_batch_size, spec.batch_size)
    n_micro = math.ceil(spec.batch_size / micro)
    opt_kernels = 12 + math.ceil(shape.trainable_tensors / 8)  # clipping + fused Adam
    cached = bool(spec.options.get("cache_features", False))
    eval_batches = sum(math.ceil(n / spec.eval_batch_size) for n in evals.values())
    if cached:  # head-only steps; the extractor runs once per example
        fwd_head, dw_head = shape.head_fwd, shape.head_fwd
        step_flops = spec.batch_size * (fwd_head + dw_head)
        step_kernels = n_micro * (4 + LOSS_KERNELS) + opt_kernels + BATCH_KERNELS
        per_eval_flops = fwd_head * sum(evals.values())
        per_eval_kernels = eval_batches * 8
        once = shape.fwd * ((sizes.get("train") or 0) + sum(evals.values()))
    else:
        step_flops = spec.batch_size * (shape.fwd + shape.dx + shape.dw)
        bwd = 2 * shape.kernels_train if shape.backprop else 6
        step_kernels = n_micro * (shape.kernels_train + bwd + LOSS_KERNELS)
        step_kernels += opt_kernels + BATCH_KERNELS
        per_eval_flops = shape.fwd * sum(evals.values())
        per_eval_kernels = eval_batches * (shape.kernels_eval + 8)
        once = 0
    return RunCost(
        steps=steps,
        n_evals=n_evals,
        step_flops=float(step_flops),
        step_kernels=step_kernels,
        eval_flops=float(per_eval_flops),
        eval_kernels=per_eval_kernels,
        once_flops=float(once),
        precision=spec.precision,
        width=shape.width,
    )


def cpu_seconds(costs: Sequence[RunCost], hw: Hardware) -> float:
    """Seconds for one process training `costs` together on this CPU (one run: a lone run;
    several: a fused pack, whose ops are issued once for all)."""
    first = costs[0]
    achieved = hw.cpu_peak(first.width) * hw.cpu_fraction
    op = hw.cpu_op_us * 1e-6
    steps = max(c.steps for c in costs)
    evals = max(c.n_evals for c in costs)
    flops = sum(c.train_flops + c.total_eval_flops for c in costs)
    return flops / achieved + op * (steps * first.step_kernels + evals * first.eval_kernels)


def gpu_seconds(costs: Sequence[RunCost], hw: Hardware, gpu: str | None = None) -> float:
    """Seconds for one process training `costs` together on the named GPU: per step and per
    evaluation the longer of the arithmetic at mfu x peak and the kernel launches."""
    first = costs[0]
    rate = GPUS[gpu or hw.gpu].peak(first.precision) * hw.mfu
    launch = hw.launch_us * 1e-6
    steps = max(c.steps for c in costs)
    evals = max(c.n_evals for c in costs)
    step = max(sum(c.step_flops for c in costs) / rate, first.step_kernels * launch)
    ev = max(sum(c.eval_flops for c in costs) / rate, first.eval_kernels * launch)
    return steps * step + evals * ev + sum(c.once_flops for c in costs) / rate
