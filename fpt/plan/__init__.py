"""`fpt plan`: what a config's grid costs before it starts, and what each training job asks
SLURM for (`train_runtime_min: auto`, `train_mem_mb: auto`).

Per run, from the run's spec alone (no data, no weights):

- **FLOPs**: the model's own analytic count, `FPT.flops_per_example` (forward, activation
  gradients, weight gradients per example; formula in its docstring), of a model built as
  `fpt describe` builds it: the task's shapes from its options (`Task.shapes`), the backbone
  from its shipped architecture config on the meta device. Training = steps x batch x
  (F + dX + dW); evaluation = forward only, F x the examples of every eval split, at step 0,
  every `eval_every` steps and at the end. Split sizes come from the task's options and the
  datasets' published sizes (`split_sizes`). A model is built once per distinct shape
  (task options, backbone, size, depth, preset, ...; the backbone once per architecture):
  the paper grid's ~930 runs have ~150 shapes on 16 backbones. Shapes are also cached on
  disk for later processes (`CACHE_ENV`, keyed by a hash of the code that makes them), so a
  Snakemake dry run evaluating ~1,000 jobs' resources builds no model at all. Padded token
  tasks are counted at their full `max_length` (an upper bound for `readout: last_token`,
  which cuts each batch to its longest example); early stopping is not predicted (the whole
  step budget counts); a run with `cache_features` costs one forward per example of its
  dataset plus head-only steps.
- **Time** on two kinds of machine, each a documented model, not a measurement:
  - *CPU* (this machine): arithmetic at `cpu_fraction` (default 0.5; BENCHMARKS.md section 1
    measured 0.6-0.66 for GPT-2 small at batch 4) of a measured fp32 matmul peak, timed once
    per model width with the job's thread count ((256 x d) @ (d x 4d), best of a few, ~0.1 s a
    width, cached in the process; `cpu_gflops` overrides it), *plus* a fixed cost per
    operator (`cpu_op_us`, default 10 us): a CPU runs each op synchronously, so overhead and
    arithmetic add.
  - *GPU* (a named one, `GPUS`: dense peaks without sparsity, the run's precision picks
    fp32 / tf32 / bf16; fp32 is the paper's and fpt's default, TF32 off): a step takes the
    longer of its arithmetic at `mfu` x the peak and its kernel launches x `launch_us`
    (default 8 us): kernels are queued asynchronously, so at the paper's batch of 4 a small
    model's step is bounded below by launch overhead, not by FLOPs. The kernels of a step are
    counted from the model's modules (`kernels.forward_kernels`: one per parametrised layer, eight
    per reference layer norm, a few per activation, two per active dropout, eight more per
    block for attention and residuals, the reference LSTM cell's ~27 per token), backward
    twice the forward when gradients flow below the head, plus loss, clipping and Adam.
  - *Fused packs*: `pack_size` runs of one backbone that differ only in seed and lr, stacked
    in one process, launch one set of kernels per step for all of them: a pack's step takes
    max(sum of the runs' arithmetic, one run's launches) on a GPU and sum of arithmetic + one
    run's op overheads on a CPU. A fused figure is therefore never above the lone one, and
    the gain is largest where lone runs are launch-bound (small models, batch 4, GPU).
- **Memory** (host RAM, what `mem_mb` asks for): a fixed floor for the Python/torch process
  (`FLOOR_MB`), the weights in fp32 x `LOAD_FACTOR` (loading holds a second copy of part of
  them), for each run of a job its trainable copy, gradients and Adam's two moments (16 bytes
  per trainable parameter), the stored activations of one micro-batch (`ACT_BYTES` per token
  x width x block, Korthikanti et al.'s count in fp32; none stored when nothing below the
  head trains), the evaluation's transient activations and the dataset in memory. Frozen
  weights are held once per pack (once per seed when the backbone is drawn per seed). On a
  GPU the activations, states and weights live on the device: the host keeps the floor, the
  CUDA runtime and libraries (`CUDA_HOST_MB`, an assumption until measured on a GPU), the
  weights while loading, and the data; the plan reports the device memory too. Calibration: measured peaks on this machine are 1.5 GB for GPT-2
  small and 5.4 GB for GPT-2 large at batch 4; this model gives 1.2-1.8 GB and 5.0-6.7 GB
  on the short-sequence tasks (bits, CIFAR-10) before the safety factor, more for 512-1024
  token ListOps / homology (their activations and datasets).

Job resources (`job_resources`, through `fpt.workflow_support.train_resources`) are the
estimate x `runtime_safety` (+ `STARTUP_S` of imports, data and weights loading) and x
`mem_safety`; `train_runtime_min` / `train_mem_mb` set to a number override them flat. The
train rule multiplies the runtime by the attempt.

The modules, one job each: `gpus` (the GPU catalogue), `hardware` (the `estimate` block,
its defaults the schema's, and the CPU matmul probe), `splits` (examples per split), `kernels`
(the kernel-count model), `shapes` (meta-device models and their disk cache), `cost` (a run's
FLOPs, kernels and seconds), `memory`, `resources` (a training job's SLURM resources),
`experiments` (the plan of a config), `render` (text, Markdown, JSON, TSV), `compare` (the
estimate against finished runs); this one: `main`, what `fpt plan` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpt.plan.compare import compare, render_compare
from fpt.plan.cost import RunCost, cpu_seconds, gpu_seconds, n_evaluations, run_cost
from fpt.plan.experiments import Plan, Row, packs, plan
from fpt.plan.gpus import GPU, GPUS, gpu_for_device_name
from fpt.plan.hardware import (
    DEFAULT_GPU,
    DEFAULT_PACK_SIZE,
    Hardware,
    cpu_peak,
    estimate_defaults,
)
from fpt.plan.kernels import BATCH_KERNELS, BLOCK_KERNELS, LOSS_KERNELS
from fpt.plan.memory import (
    ACT_BYTES,
    CUDA_CONTEXT_MB,
    CUDA_HOST_MB,
    EVAL_ACT_BYTES,
    FLOOR_MB,
    LOAD_FACTOR,
    job_memory,
)
from fpt.plan.render import (
    COLUMNS,
    TSV_COLUMNS,
    describe_hardware,
    fmt_duration,
    fmt_flops,
    render_json,
    render_text,
    render_tsv,
    text_table,
    tsv,
)
from fpt.plan.resources import MIN_RUNTIME_MIN, STARTUP_S, job_resources
from fpt.plan.shapes import CACHE_ENV, ModelShape, model_shape, save_shape_cache
from fpt.plan.splits import DEFAULT_EVAL_EXAMPLES, split_sizes

__all__ = [
    "ACT_BYTES",
    "BATCH_KERNELS",
    "BLOCK_KERNELS",
    "CACHE_ENV",
    "COLUMNS",
    "CUDA_CONTEXT_MB",
    "CUDA_HOST_MB",
    "DEFAULT_EVAL_EXAMPLES",
    "DEFAULT_GPU",
    "DEFAULT_PACK_SIZE",
    "EVAL_ACT_BYTES",
    "FLOOR_MB",
    "GPU",
    "GPUS",
    "LOAD_FACTOR",
    "LOSS_KERNELS",
    "MIN_RUNTIME_MIN",
    "STARTUP_S",
    "TSV_COLUMNS",
    "Hardware",
    "ModelShape",
    "Plan",
    "Row",
    "RunCost",
    "compare",
    "cpu_peak",
    "cpu_seconds",
    "describe_hardware",
    "estimate_defaults",
    "fmt_duration",
    "fmt_flops",
    "gpu_for_device_name",
    "gpu_seconds",
    "job_memory",
    "job_resources",
    "main",
    "model_shape",
    "n_evaluations",
    "packs",
    "plan",
    "render_compare",
    "render_json",
    "render_text",
    "render_tsv",
    "run_cost",
    "save_shape_cache",
    "split_sizes",
    "text_table",
    "tsv",
]


def main(
    configfile: str | Path,
    fmt: str = "text",
    runs: bool = False,
    compare_dir: str | Path | None = None,
    **hardware: Any,
) -> str:
    """What `fpt plan` prints: the plan of `configfile` as text, "md", "json" or "tsv"
    (`runs`: per run, for json and tsv), or with `compare_dir` the estimate against the
    finished runs there. `hardware`: Hardware fields overriding the config's `estimate`."""
    from fpt import grid as fpt_grid

    config = fpt_grid.load_config(configfile)
    hw = Hardware.from_config(config, **hardware)
    if compare_dir is not None:
        rows, summary = compare(compare_dir, hw)
        if fmt == "json":
            return render_json({"runs": rows, "summary": summary})
        if fmt == "tsv":
            return tsv(rows)
        return render_compare(rows, summary)
    p = plan(config, hw, source=str(configfile))
    if fmt == "json":
        return render_json(p.to_json(with_runs=runs))
    if fmt == "tsv":
        return tsv(p.runs) if runs else render_tsv(p)
    return render_text(p, markdown=fmt == "md")
