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
    counted from the model's modules (`_forward_kernels`: one per parametrised layer, eight
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
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fpt.packs import pack_runs
from fpt.spec import RunSpec

log = logging.getLogger("fpt.plan")

# ---- named GPUs: dense peaks (no sparsity), TFLOP/s, and memory -------------------------


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float
    tf32_tflops: float
    fp32_tflops: float
    memory_gb: float

    def peak(self, precision: str) -> float:
        """FLOP/s of dense matmuls in the run's precision (fpt.precision: fp32 runs with TF32
        switched off, on the CUDA cores)."""
        tflops = {"bf16": self.bf16_tflops, "tf32": self.tf32_tflops}.get(
            precision, self.fp32_tflops
        )
        return tflops * 1e12


GPUS: dict[str, GPU] = {
    g.name: g
    for g in (
        GPU("H100 SXM", 989, 494, 67, 80),
        GPU("H100 PCIe", 756, 378, 51, 80),
        GPU("H200", 989, 494, 67, 141),
        GPU("A100", 312, 156, 19.5, 80),
        GPU("L40S", 362, 183, 91.6, 48),
        GPU("RTX 4090", 165, 82.6, 82.6, 24),
    )
}
DEFAULT_GPU = "H100 SXM"

# Defaults of the config's `estimate` block (fpt/schemas/config.schema.yaml states them too).
ESTIMATE_DEFAULTS: dict[str, Any] = {
    "gpu": DEFAULT_GPU,
    "gpu_mfu": 0.3,
    "launch_us": 8.0,
    "cpu_fraction": 0.5,
    "cpu_op_us": 10.0,
    "cpu_gflops": None,
    "runtime_safety": 2.0,
    "mem_safety": 1.25,
}
DEFAULT_PACK_SIZE = 8  # the fused figure's pack when the config does not pack (pack_size 1)

# Memory model (bytes unless named otherwise).
FLOOR_MB = 500  # Python, torch, transformers, fpt imported
# Host memory a CUDA process holds beyond FLOOR_MB: the CUDA runtime and the libraries a torch
# CUDA wheel loads (cuBLAS, cuDNN, NCCL, ...) with lazy module loading. Not measured by fpt
# yet: an assumption from the 3-4 GB resident that torch + transformers processes on CUDA are
# reported to hold (more with torch.compile). benchmarks/gpu_check.sh measures a CUDA training
# job's peak RSS (max_rss_mb in its train step); calibrate this from it.
CUDA_HOST_MB = 3000
CUDA_CONTEXT_MB = 500  # device memory of the CUDA context
LOAD_FACTOR = 1.5  # weights while loading: part of them held twice
ACT_BYTES = {"fp32": 68, "tf32": 68, "bf16": 40}  # stored per token x width x block (training)
EVAL_ACT_BYTES = 48  # transient per token x width during evaluation (one block at a time)
# Time model.
STARTUP_S = 120  # a job's imports, data loading and weight loading, before its first step
MIN_RUNTIME_MIN = 5
LOSS_KERNELS = 12  # loss, accuracy, accumulation per micro-batch
BATCH_KERNELS = 8  # drawing a batch on the device
BLOCK_KERNELS = 8  # per block: attention scores/softmax/reshapes, residual adds


# ---- split sizes from the options alone ----------------------------------------------------

# Eval examples assumed per split of a task that does not declare its sizes
# (Task.published_split_sizes) and names none in its options.
DEFAULT_EVAL_EXAMPLES = 1000


def split_sizes(task: str, options: Mapping[str, Any] | None = None) -> dict[str, int | None]:
    """Examples per split of `task` built with `options` (nothing read): the task's own
    `Task.published_split_sizes`; for a task that declares none (a task module of your own), the
    options' `<split>_size` of its evaluated splits, else DEFAULT_EVAL_EXAMPLES each, with a
    warning once, and "train" unknown (None)."""
    from fpt.tasks import TASKS

    cls = TASKS[task]
    opts = cls.options_of(dict(options or {}))
    own = cls.published_split_sizes(opts)
    if own is not None:
        return dict(own)
    if task not in _ASSUMED:
        _ASSUMED.add(task)
        log.warning(
            "%s declares no split sizes (Task.published_split_sizes): fpt plan assumes %s examples per "
            "evaluated split unless its options give <split>_size",
            task,
            DEFAULT_EVAL_EXAMPLES,
        )
    splits = [s for s in cls.eval_splits if s != "val" or cls.has_val(opts)]
    return {"train": None, **{s: int(opts.get(f"{s}_size", DEFAULT_EVAL_EXAMPLES)) for s in splits}}


_ASSUMED: set[str] = set()


# ---- one model per distinct shape, on the meta device ----------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from a model: its FLOPs per example, sizes and kernel counts."""

    fwd: int  # FLOPs per example (FPT.flops_per_example)
    dx: int
    dw: int
    head_fwd: int  # the output layer's forward FLOPs per example
    tokens: int
    width: int
    layers: int
    total_params: int
    trainable_params: int
    trainable_tensors: int
    backprop: bool  # gradients flow below the head
    kernels_train: int  # forward kernels of one training micro-batch
    kernels_eval: int  # forward kernels of one evaluation batch
    input_bytes: int  # one example of the dataset in memory


def _forward_kernels(module, tokens: int, training: bool) -> int:
    """Kernels a forward pass of `module` launches, counted from its modules (a model of
    eager PyTorch, not a trace): one per parametrised layer (Linear, Conv1D, LayerNorm,
    Embedding), eight per reference (hand-written) layer norm, three per parameter-free
    op module (activations), two per active dropout, a cuDNN/ATen LSTM three per token, and
    the reference LSTM cell ~27 per token (its Python loop over time steps)."""
    from torch import nn

    name = type(module).__name__
    if name == "LayerNormLSTMCell":
        drop = 2 if training and getattr(module, "dropout", 0) > 0 else 0
        return 10 + tokens * (27 + drop)
    children = list(module.children())
    if children:
        return sum(_forward_kernels(c, tokens, training) for c in children)
    if isinstance(module, nn.Dropout):
        return 2 if training and module.p > 0 else 0
    if name == "ReferenceLayerNorm":
        return 8
    if isinstance(module, nn.RNNBase):
        return 3 * tokens
    if any(True for _ in module.parameters(recurse=False)):
        return 1
    return 3


def _model_kernels(model, training: bool) -> int:
    tokens = model.input_spec.n_tokens
    unused = model.backbone.groups().unused
    n = _forward_kernels(model, tokens, training)
    n -= sum(_forward_kernels(m, tokens, training) for m in unused)
    return n + BLOCK_KERNELS * model.backbone.n_layers


@cache
def _backbone(backbone: str, size: str, depth: int | None, lstm_cell: str, dropout: float | None):
    """One meta-device backbone per architecture, shared by the shapes built on it (each
    shape is computed right after its preset is applied)."""
    import torch

    from fpt.models.build import build_backbone

    with torch.device("meta"):
        return build_backbone(
            backbone, size, "random", depth, lstm_cell=lstm_cell, backbone_dropout=dropout
        )


def _shape_key(spec: RunSpec) -> tuple:
    return (
        spec.task,
        json.dumps(spec.options, sort_keys=True, default=str),
        spec.backbone,
        spec.size,
        spec.trainable,
        spec.depth,
        spec.input_init,
        spec.lstm_cell,
        spec.backbone_dropout,
    )


_SHAPES: dict[tuple, ModelShape] = {}

# The shapes on disk, so that a later process (each Snakemake dry run evaluates the train
# jobs' resources) builds no model and imports no transformers model code: a JSON file,
# valid for one fingerprint of the code and libraries that make a shape. FPT_PLAN_CACHE:
# its path, or "off"; default $XDG_CACHE_HOME/fpt/plan-shapes.json (~/.cache/...).
CACHE_ENV = "FPT_PLAN_CACHE"
_DISK: dict[str, Any] = {}  # "fingerprint", "path", "shapes" (key -> fields), "dirty"


def _cache_path() -> Path | None:
    import os

    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "no", "false") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fpt" / "plan-shapes.json"


@cache
def _fingerprint() -> str:
    """A hash of what a ModelShape depends on: this module, fpt's models (code and shipped
    configs) and tasks, torch's and transformers' versions."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha1()
    for dist in ("torch", "transformers"):
        try:
            h.update(f"{dist}={version(dist)};".encode())
        except PackageNotFoundError:
            h.update(f"{dist}=none;".encode())
    root = Path(__file__).resolve().parent
    files = [
        Path(__file__).resolve(),
        *sorted((root / "models").rglob("*.py")),
        *sorted((root / "models").rglob("*.json")),
        *sorted((root / "tasks").rglob("*.py")),
    ]
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _disk_key(spec: RunSpec, key: tuple) -> str:
    """The shape key as text, with the source of a task from outside fpt (task_modules)."""
    import hashlib
    import inspect

    from fpt.tasks import TASKS

    extra = ""
    module = inspect.getsourcefile(TASKS[spec.task]) or ""
    if module and not Path(module).resolve().is_relative_to(Path(__file__).resolve().parent):
        extra = hashlib.sha1(Path(module).read_bytes()).hexdigest()
    return json.dumps([*key, extra], default=str)


def _disk_shapes() -> dict[str, Any]:
    path = _cache_path()
    if "path" not in _DISK or _DISK["path"] != path:
        _DISK.clear()
        _DISK.update(path=path, shapes={}, dirty=False)
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("fingerprint") == _fingerprint():
                    _DISK["shapes"] = dict(data["shapes"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable: rebuilt and rewritten
    return _DISK["shapes"]


def save_shape_cache() -> None:
    """Write the shapes built in this process to the disk cache (atomically; a concurrent
    writer's entries may be lost, never corrupted). Called at exit and by `plan`."""
    path = _DISK.get("path")
    if path is None or not _DISK.get("dirty"):
        return
    from fpt import files

    try:
        text = json.dumps({"fingerprint": _fingerprint(), "shapes": _DISK["shapes"]})
        files.write_text(path, text)
        _DISK["dirty"] = False
    except OSError:
        pass  # a cache: the next process builds the models again


def model_shape(spec: RunSpec) -> ModelShape:
    """The ModelShape of `spec`'s model, built once per distinct shape (cached in the
    process, and on disk across processes: see CACHE_ENV)."""
    key = _shape_key(spec)
    shape = _SHAPES.get(key)
    if shape is not None:
        return shape
    disk = _disk_shapes()
    text = _disk_key(spec, key) if _DISK["path"] is not None else ""
    if text in disk:
        shape = ModelShape(**disk[text])
    else:
        shape = _build_shape(spec)
        if _DISK["path"] is not None:
            if not _DISK["dirty"]:
                import atexit

                atexit.register(save_shape_cache)
            disk[text] = dataclasses.asdict(shape)
            _DISK["dirty"] = True
    _SHAPES[key] = shape
    return shape


def _build_shape(spec: RunSpec) -> ModelShape:
    import torch

    from fpt.models.fpt import FPT
    from fpt.tasks import TASKS

    inp, head = TASKS[spec.task].shapes(dict(spec.options))
    bb = _backbone(spec.backbone, spec.size, spec.depth_int, spec.lstm_cell, spec.backbone_dropout)
    with torch.device("meta"):
        model = FPT(bb, inp, head, input_init=spec.input_init)
    model.freeze(spec.trainable)
    fwd, dx, dw = model.flops_per_example()
    trainable = [p for p in model.parameters() if p.requires_grad]
    per_token = inp.dim if inp.kind == "continuous" else 8  # pixels as uint8; token ids int64
    return ModelShape(
        fwd=fwd,
        dx=dx,
        dw=dw,
        head_fwd=head.n_answer_tokens * 2 * bb.width * head.outputs_per_token * head.n_classes,
        tokens=inp.n_tokens,
        width=bb.width,
        layers=bb.n_layers,
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in trainable),
        trainable_tensors=len(trainable),
        backprop=dx > 0,
        kernels_train=_model_kernels(model, training=True),
        kernels_eval=_model_kernels(model, training=False),
        input_bytes=inp.n_tokens * per_token,
    )


# ---- the cost of one run --------------------------------------------------------------------


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


# ---- hardware and time --------------------------------------------------------------------------


@cache
def cpu_peak(width: int, threads: int | None = None, seconds: float = 0.1) -> float:
    """fp32 matmul FLOP/s of this machine at a model's width: (256 x width) @ (width x
    4 width) (a batch of 4 x 64 tokens through a feed-forward's first layer), best of a few
    within `seconds`, with `threads` torch threads (then restored). Cached per process."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        m, k, n = 256, width, 4 * width
        gen = torch.Generator().manual_seed(0)  # not the global RNG: nothing else changes
        a, b = torch.rand(m, k, generator=gen), torch.rand(k, n, generator=gen)
        out = torch.empty(m, n)
        torch.mm(a, b, out=out)  # warm
        best, start = math.inf, time.perf_counter()
        for i in range(1000):
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            best = min(best, time.perf_counter() - t0)
            if i >= 2 and time.perf_counter() - start > seconds:
                break
        return 2 * m * k * n / max(best, 1e-9)
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Hardware:
    """What the times are computed for (the module docstring has the model)."""

    gpu: str = DEFAULT_GPU
    mfu: float = ESTIMATE_DEFAULTS["gpu_mfu"]
    launch_us: float = ESTIMATE_DEFAULTS["launch_us"]
    cpu_fraction: float = ESTIMATE_DEFAULTS["cpu_fraction"]
    cpu_op_us: float = ESTIMATE_DEFAULTS["cpu_op_us"]
    cpu_gflops: float | None = None  # None: measured (cpu_peak)
    threads: int | None = None  # torch threads of a CPU job (the config's train_threads)
    pack_size: int = DEFAULT_PACK_SIZE

    def __post_init__(self) -> None:
        if self.gpu not in GPUS:
            raise ValueError(f"unknown GPU {self.gpu!r}; known: {', '.join(GPUS)}")
        for name in ("mfu", "cpu_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], not {getattr(self, name)}")
        if self.pack_size < 1:
            raise ValueError(f"pack_size must be >= 1, not {self.pack_size}")

    def cpu_peak(self, width: int) -> float:
        if self.cpu_gflops:
            return self.cpu_gflops * 1e9
        return cpu_peak(width, self.threads)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> Hardware:
        """The config's `estimate` block (defaults filled), its `train_threads` and its
        `pack_size` (the fused figure: DEFAULT_PACK_SIZE when the config does not pack), then
        `overrides` (None values ignored)."""
        est = {**ESTIMATE_DEFAULTS, **(config.get("estimate") or {})}
        pack = int(config.get("pack_size", 1) or 1)
        values = {
            "gpu": est["gpu"],
            "mfu": est["gpu_mfu"],
            "launch_us": est["launch_us"],
            "cpu_fraction": est["cpu_fraction"],
            "cpu_op_us": est["cpu_op_us"],
            "cpu_gflops": est["cpu_gflops"],
            "threads": config.get("train_threads"),
            "pack_size": pack if pack > 1 else DEFAULT_PACK_SIZE,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


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


# ---- memory ---------------------------------------------------------------------------------


def job_memory(specs: Sequence[RunSpec]) -> dict[str, float]:
    """Bytes one process training `specs` together needs: host RAM on a CPU job
    (`host_cpu`), host RAM on a GPU job (`host_gpu`), and device memory (`device`)."""
    shapes = [model_shape(s) for s in specs]
    first, s0 = shapes[0], specs[0]
    # frozen weights: once, or once per seed where the backbone is drawn per seed
    copies = 1 if s0.init == "pretrained" else len({s.seed for s in specs})
    frozen = 4 * (first.total_params - first.trainable_params) * copies
    per_run = 0.0
    for spec, shape in zip(specs, shapes, strict=True):
        micro = min(spec.micro_batch_size, spec.batch_size)
        per_token = ACT_BYTES.get(spec.precision, 68) * shape.layers if shape.backprop else 32
        per_run += 16 * shape.trainable_params + micro * shape.tokens * shape.width * per_token
    eval_t = max(
        s.eval_batch_size * sh.tokens * sh.width * EVAL_ACT_BYTES
        for s, sh in zip(specs, shapes, strict=True)
    )
    sizes = split_sizes(s0.task, s0.options)
    data = 2 * sum(n or 0 for n in sizes.values()) * first.input_bytes
    loading = LOAD_FACTOR * 4 * first.total_params
    mb = 1 << 20
    return {
        "host_cpu": FLOOR_MB * mb
        + frozen
        + per_run
        + eval_t
        + data
        + (LOAD_FACTOR - 1) * 4 * first.total_params,
        "host_gpu": (FLOOR_MB + CUDA_HOST_MB) * mb + loading + data,
        "device": CUDA_CONTEXT_MB * mb + frozen + per_run + eval_t,
    }


# ---- job resources (the workflow's train rule) ------------------------------------------------


def _config_key(config: Mapping[str, Any]) -> str:
    keys = ("device", "train_threads", "train_runtime_min", "train_mem_mb", "estimate")
    return json.dumps({k: config.get(k) for k in keys}, sort_keys=True, default=str)


_JOBS: dict[tuple, dict[str, int]] = {}


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
    est = {**ESTIMATE_DEFAULTS, **(config.get("estimate") or {})}
    runtime, mem = config.get("train_runtime_min", "auto"), config.get("train_mem_mb", "auto")
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


# ---- the plan of a config -------------------------------------------------------------------


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
            "experiments": [_row_json(r) for r in self.experiments],
            "total": _row_json(self.total),
        }
        if with_runs:
            out["runs"] = self.runs
        return out


def _row_json(r: Row) -> dict[str, Any]:
    return {**dataclasses.asdict(r), "flops": r.flops}


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
        source, hw, rows, total, list(per_run.values()), {w: hw.cpu_peak(w) for w in widths}
    )


# ---- rendering ------------------------------------------------------------------------------


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def fmt_flops(flops: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}FLOP"
    return f"{flops:.3g} FLOP"


COLUMNS = (
    "experiment",
    "runs",
    "train FLOPs",
    "eval FLOPs",
    "CPU (here)",
    "GPU lone",
    "GPU fused",
    "host RAM/run",
    "GPU mem/run",
)


def _cells(r: Row) -> list[str]:
    runs = f"{r.runs}" + (f" +{r.source_runs}" if r.source_runs else "")
    return [
        r.name,
        runs,
        fmt_flops(r.train_flops),
        fmt_flops(r.eval_flops),
        fmt_duration(r.cpu_s),
        fmt_duration(r.gpu_lone_s),
        fmt_duration(r.gpu_fused_s),
        f"{r.max_host_mb / 1024:.1f} GB",
        f"{r.max_device_mb / 1024:.1f} GB",
    ]


def _table(header: Sequence[str], rows: list[list[str]], markdown: bool = False) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), *(line(r) for r in rows)])


def describe_hardware(p: Plan) -> list[str]:
    hw, gpu = p.hardware, GPUS[p.hardware.gpu]
    given = "given" if hw.cpu_gflops else f"measured, {hw.threads or 'default'} threads"
    peaks = ", ".join(f"{p / 1e9:.0f} at width {w}" for w, p in p.cpu_peaks.items())
    return [
        f"CPU (here): fp32 matmul peak GFLOP/s ({given}): {peaks}; x {hw.cpu_fraction} "
        f"achieved, + {hw.cpu_op_us:g} us per op",
        f"GPU: {gpu.name} (peaks TFLOP/s: bf16 {gpu.bf16_tflops:g}, tf32 {gpu.tf32_tflops:g}, "
        f"fp32 {gpu.fp32_tflops:g}; each run at its precision's) x MFU {hw.mfu}, a step at "
        f"least its kernels x {hw.launch_us:g} us; fused: packs of up to {hw.pack_size} runs "
        "differing only in seed/lr",
    ]


def render_text(p: Plan, markdown: bool = False) -> str:
    rows = [_cells(r) for r in p.experiments] + [_cells(p.total)]
    head = [
        f"Plan of {p.source}: {p.total.runs} unique runs in {len(p.experiments)} experiments "
        f"({fmt_flops(p.total.flops)}). Times: one device, runs one after the other.",
        *describe_hardware(p),
        "runs: the experiment's own (+ the Bit Memory source runs it needs); memory: the "
        "largest lone run's, before the safety factor",
    ]
    sep = "\n\n" if markdown else "\n"
    body = _table(COLUMNS, rows, markdown=markdown)
    return sep.join(["\n".join(("- " + h if markdown else h) for h in head), body]) + "\n"


TSV_COLUMNS = (
    "experiment",
    "runs",
    "source_runs",
    "train_flops",
    "eval_flops",
    "cpu_s",
    "gpu_lone_s",
    "gpu_fused_s",
    "packs",
    "max_host_mb",
    "max_device_mb",
)


def render_tsv(p: Plan) -> str:
    lines = ["\t".join(TSV_COLUMNS)]
    for r in [*p.experiments, p.total]:
        d = _row_json(r)
        d["experiment"] = r.name
        lines.append("\t".join(_tsv_value(d[c]) for c in TSV_COLUMNS))
    return "\n".join(lines) + "\n"


def _tsv_value(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


# ---- checking the estimate against finished runs ------------------------------------------------


def gpu_for_device_name(name: str | None) -> str | None:
    """The GPUS entry a torch device name (metrics' `device_name`) is, if any."""
    if not name:
        return None
    n = name.upper()
    for key, gpu in (("H200", "H200"), ("A100", "A100"), ("L40S", "L40S"), ("4090", "RTX 4090")):
        if key in n:
            return gpu
    if "H100" in n:
        return "H100 PCIe" if "PCIE" in n else "H100 SXM"
    return None


def compare(results_dir: str | Path, hw: Hardware) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Predicted vs measured time of every finished run under `results_dir`/runs: the last
    metrics row's `wall_s` (recorded before that row's evaluation ran) against the estimate
    for the steps the run trained (`stop_step`) and the evaluations before its last. CPU runs
    are predicted with the CPU model, CUDA runs with the GPU their `device_name` names (else
    `hw.gpu`). Memory: the host RAM estimate of a lone run against the peak RSS (`max_rss`,
    MB) of its Snakemake benchmark, `results_dir`/benchmarks/train/<run>.tsv, where there is
    one (the last attempt's). Returns the rows and a summary: total ratio (measured /
    predicted over all runs), the median of the per-run ratios, and the memory's."""
    import pandas as pd
    import pyarrow.parquet as pq

    root = Path(results_dir)
    runs_dir = root / "runs" if (root / "runs").is_dir() else root
    rows = []
    cols = ["step", "wall_s", "stop_step", "device", "device_name"]
    for metrics in sorted(runs_dir.rglob("metrics.parquet")):
        spec_file = metrics.parent / "spec.json"
        if not spec_file.is_file():
            continue
        spec = RunSpec.from_json(json.loads(spec_file.read_text()))
        df = pq.ParquetFile(metrics).read(columns=cols).to_pandas()
        last = df.loc[df["step"].idxmax()]
        stop = spec.steps if pd.isna(last["stop_step"]) else int(last["stop_step"])
        cost = run_cost(spec, steps=stop, n_evals=max(0, df["step"].nunique() - 1))
        device = str(last["device"] or "cpu")
        if device.startswith("cuda"):
            gpu = gpu_for_device_name(last["device_name"]) or hw.gpu
            predicted = gpu_seconds([cost], hw, gpu)
            how = gpu
        else:
            predicted = cpu_seconds([cost], hw)
            how = "cpu"
        measured = float(last["wall_s"])
        run = str(metrics.parent.relative_to(runs_dir))
        mem = job_memory([spec])["host_gpu" if device.startswith("cuda") else "host_cpu"]
        rss = _max_rss(root / "benchmarks" / "train" / f"{run}.tsv")
        rows.append(
            {
                "run": run,
                "model": how,
                "steps": stop,
                "predicted_s": predicted,
                "measured_s": measured,
                "ratio": measured / predicted if predicted > 0 else math.nan,
                "predicted_mb": mem / (1 << 20),
                "max_rss_mb": rss,
                "mem_ratio": rss / (mem / (1 << 20)) if rss is not None else math.nan,
            }
        )
    ratios = [r["ratio"] for r in rows if math.isfinite(r["ratio"])]
    mem_ratios = [r["mem_ratio"] for r in rows if math.isfinite(r["mem_ratio"])]
    pred = sum(r["predicted_s"] for r in rows)
    summary = {
        "runs": len(rows),
        "predicted_s": pred,
        "measured_s": sum(r["measured_s"] for r in rows),
        "ratio": sum(r["measured_s"] for r in rows) / pred if pred > 0 else math.nan,
        "median_ratio": statistics.median(ratios) if ratios else math.nan,
        "memory_runs": len(mem_ratios),
        "median_mem_ratio": statistics.median(mem_ratios) if mem_ratios else math.nan,
        "max_mem_ratio": max(mem_ratios) if mem_ratios else math.nan,
    }
    return rows, summary


def _max_rss(path: Path) -> float | None:
    """The last row's `max_rss` (MB) of a Snakemake benchmark file, if readable."""
    import csv

    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        return float(rows[-1]["max_rss"])
    except (OSError, IndexError, KeyError, TypeError, ValueError):
        return None


def render_compare(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    table = [
        [
            r["run"],
            r["model"],
            str(r["steps"]),
            f"{r['predicted_s']:.1f}",
            f"{r['measured_s']:.1f}",
            f"{r['ratio']:.2f}",
            f"{r['predicted_mb']:.0f}",
            "-" if r["max_rss_mb"] is None else f"{r['max_rss_mb']:.0f}",
        ]
        for r in rows
    ]
    header = ["run", "predicted on", "steps", "predicted s", "measured wall_s", "ratio"]
    header += ["predicted MB", "max_rss MB"]
    foot = (
        f"{summary['runs']} runs: predicted {summary['predicted_s']:.1f} s, measured "
        f"{summary['measured_s']:.1f} s, ratio measured/predicted {summary['ratio']:.2f} "
        f"(median per run {summary['median_ratio']:.2f})"
    )
    if summary["memory_runs"]:
        foot += (
            f"\nmemory ({summary['memory_runs']} runs with a benchmark): max_rss / predicted "
            f"median {summary['median_mem_ratio']:.2f}, max {summary['max_mem_ratio']:.2f} "
            "(before the safety factor)"
        )
    return _table(header, table) + "\n" + foot + "\n"


# ---- the command ----------------------------------------------------------------------------


def run_tsv(p: Plan) -> str:
    cols = list(p.runs[0]) if p.runs else ["run"]
    lines = ["\t".join(cols)]
    lines += ["\t".join(_tsv_value(r[c]) for c in cols) for r in p.runs]
    return "\n".join(lines) + "\n"


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
            return json.dumps({"runs": rows, "summary": summary}, indent=2) + "\n"
        if fmt == "tsv":
            cols = list(rows[0]) if rows else ["run"]
            body = ["\t".join(_tsv_value(r[c]) for c in cols) for r in rows]
            return "\n".join(["\t".join(cols), *body]) + "\n"
        return render_compare(rows, summary)
    p = plan(config, hw, source=str(configfile))
    if fmt == "json":
        return json.dumps(p.to_json(with_runs=runs), indent=2) + "\n"
    if fmt == "tsv":
        return run_tsv(p) if runs else render_tsv(p)
    return render_text(p, markdown=fmt == "md")
