"""`fpt bench`: time warm training steps and evaluation, count their FLOPs analytically,
and compare with (a) the machine's measured dense-matmul peak and (b) the same steps in a
reference-style loop (fp32, eager attention, a DataLoader over CPU tensors, per-step host
syncs, for-loop Adam), as the paper's reference code trains.

"Ours" is the training loop itself: fpt.train.Loop built as `fpt train` builds it
(fpt.train.build_run: seeding, task, model; the model's `configure_optimizers`; the run's
precision; the loop's accumulator and train_step), stepped with `Loop.advance`; evaluation is
fpt.train.evaluate_batches.

FLOPs per training step: the model's own count, FPT.flops_per_example (nanoGPT-style,
matmuls only; the formula is in its docstring): forward F = T(2N_blk + 2 d_in d + 4LTd)
+ k 2do per example, plus the activation- and weight-gradient terms; with everything
trainable, nanoGPT's 6N + 12LTd per token.

Step times are the median over `iters` warm steps (robust to bursts of other work on a
shared machine); the JSON records the load average before and after. Evaluation is timed on
the first `eval_examples` test examples (not the whole test set, which
for GPT-2 on a CPU takes minutes); its FLOPs are the forward term F.

`ablations=True` also times our loop with one optimisation undone at a time (eager attention,
gradients for frozen weights, a host sync per step, batches built on the host through a
DataLoader), so each optimisation has a before/after figure on the same machine. All loops are built
first, warmed, then timed round-robin (one step of each per round), so a change in the
machine's load during the run affects every loop alike.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from fpt.bench.fake_data import fake_data_dir
from fpt.bench.timing import interleaved, machine, matmul_peak, timed
from fpt.models import FPT
from fpt.spec import RunSpec
from fpt.tasks import Batch, Task
from fpt.train import Loop, build_run, evaluate_batches, resolve_device

# Ablations of our loop: each undoes one optimisation (the name says what is undone).
ABLATIONS = ("eager_attention", "frozen_weight_grads", "host_sync_per_step", "host_batches")


def step_flops(model: FPT, task: Task, batch_size: int) -> float:
    """FLOPs of one training step of `batch_size` examples (FPT.flops_per_example)."""
    return float(batch_size * sum(model.flops_per_example(task)))


def forward_flops(model: FPT, task: Task, batch_size: int) -> float:
    """FLOPs of the forward pass alone (evaluation) of `batch_size` examples."""
    return float(batch_size * model.flops_per_example(task)[0])


def run_summary(spec: RunSpec, task: Task) -> dict[str, Any]:
    """The model and shape axes a benchmark JSON reports."""
    return {
        "task": spec.task,
        "backbone": spec.backbone,
        "size": spec.size,
        "init": spec.init,
        "trainable": spec.trainable,
        "batch_size": spec.batch_size,
        "tokens": task.input.n_tokens,
    }


def first_eval_batches(task: Task, n_examples: int, batch_size: int) -> list[Batch]:
    """The test batches holding the first `n_examples` examples, made before any timing."""
    out, n = [], 0
    for b in task.eval_batches("test", min(batch_size, n_examples)):
        out.append(b)
        n += len(b)
        if n >= n_examples:
            break
    return out


def host_loader(task: Task, spec: RunSpec, n_steps: int) -> torch.utils.data.DataLoader:
    """`n_steps` training batches drawn up front and served from host memory through a
    shuffling DataLoader, as the reference code feeds its model."""
    gen = torch.Generator(device=task.device).manual_seed(spec.seed)
    data = task.train_batch(n_steps * spec.batch_size, gen)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x.cpu(), data.y.cpu()),
        batch_size=spec.batch_size,
        shuffle=True,
    )


def our_loop(
    spec: RunSpec,
    dev: torch.device,
    weights_dir: Path | None = None,
    n_steps: int = 0,
    undo: str | None = None,
    compile: bool = False,
    data_dir: Path | None = None,
) -> tuple[Loop, Callable[[], None]]:
    """Our training loop (fpt.train.Loop, built as `fpt train` builds it) and a function
    that runs one step of it; `undo` names one of ABLATIONS; `n_steps`: how many steps the
    host_batches ablation has data for."""
    eager = undo == "eager_attention"
    _, task, model = build_run(spec, dev, weights_dir, data_dir, output_attentions=eager)
    loop = Loop(spec, task, model, dev, compile=compile)
    if undo == "frozen_weight_grads":  # frozen weights get gradients (never used)
        for p in model.parameters():
            p.requires_grad_(True)
    # batches made on the host, through a DataLoader
    host = iter(host_loader(loop.task, spec, n_steps)) if undo == "host_batches" else None

    def step() -> None:
        batch = None
        if host is not None:
            x, y = next(host)
            batch = Batch(x.to(dev), y.to(dev))
        if undo == "frozen_weight_grads":
            model.zero_grad(set_to_none=True)
        loop.advance(batch)
        if undo == "host_sync_per_step":
            loop.acc.loss.item()

    return loop, step


def eval_rate(loop: Loop, n_examples: int) -> dict[str, Any]:
    """Examples per second of the loop's evaluation on the first `n_examples` test examples."""
    batches = first_eval_batches(loop.task, n_examples, loop.spec.eval_batch_size)

    def run_eval() -> None:
        evaluate_batches(loop.step_model, loop.task, batches, loop.autocast)

    run_eval()  # warm
    eval_s = timed(run_eval, 1, loop.device)
    n = sum(len(b) for b in batches)
    return {"examples": n, "batch_size": len(batches[0]), "examples_per_s": n / eval_s}


def reference_step(
    spec: RunSpec,
    dev: torch.device,
    weights_dir: Path | None = None,
    n_steps: int = 0,
    data_dir: Path | None = None,
) -> Callable[[], None]:
    """A step of a loop shaped like the paper's reference code: deliberately not ours (fp32,
    eager attention, host batches through a DataLoader, host syncs per micro-batch,
    for-loop Adam), since measuring the difference is its purpose."""
    # output_attentions=True builds the backbone with eager attention, as transformers 4.1 ran it.
    _, task, model = build_run(spec, dev, weights_dir, data_dir, output_attentions=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=spec.lr, foreach=False)
    it = iter(host_loader(task, spec, n_steps))

    def step() -> None:
        x, y = next(it)
        x, y = x.to(dev), y.to(dev)
        opt.zero_grad()
        for i in range(0, len(x), spec.micro_batch_size):
            logits = model(x[i : i + spec.micro_batch_size])
            loss = (
                task.loss(logits, y[i : i + spec.micro_batch_size])
                * min(spec.micro_batch_size, len(x) - i)
                / len(x)
            )
            loss.backward()
            loss.item()  # per-step host sync: the reference logs every step
            (logits.argmax(-1) == y[i : i + spec.micro_batch_size]).float().mean().item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step


def time_our_step(
    spec: RunSpec, dev: torch.device, warmup: int, iters: int, weights_dir: Path | None = None
) -> tuple[Loop, dict[str, float]]:
    """Our loop alone, timed warm: the loop and its `step_s` and `warmup_s` (bench-scaling)."""
    loop, step = our_loop(spec, dev, weights_dir, warmup + iters)
    return loop, interleaved({"ours": step}, warmup, iters, dev)["ours"]


def rates(flops: float, step_s: float, peak: float, batch: int, tokens: int) -> dict[str, float]:
    """One step time seen as rates: steps, samples, tokens and FLOP/s, fraction of `peak`."""
    return {
        "step_s": step_s,
        "steps_per_s": 1 / step_s,
        "samples_per_s": batch / step_s,
        "tokens_per_s": batch * tokens / step_s,
        "flops": flops / step_s,
        "fraction_of_peak": flops / step_s / peak,
    }


@contextlib.contextmanager
def _bench_data(
    spec: RunSpec, fake_data: bool, data_dir: Path | None
) -> Iterator[tuple[RunSpec, Path | None]]:
    """The spec and data dir to time: with `fake_data`, random images in the real file
    layout in a temporary folder (removed afterwards) and a small val split, since the fake
    training set has only a few hundred images."""
    if not fake_data:
        yield spec, data_dir
        return
    with tempfile.TemporaryDirectory(prefix="fpt-bench-data-") as tmp:
        fake_data_dir(spec.task, Path(tmp))
        options = {"val_size": 64, **spec.options}
        yield RunSpec.from_json({**spec.to_json(), "options": options}), Path(tmp)


def bench(
    spec: RunSpec,
    device: str = "auto",
    warmup: int = 3,
    iters: int = 10,
    reference: bool = True,
    weights_dir=None,
    eval_examples: int = 64,
    compile: bool = False,
    ablations: bool = False,
    fake_data: bool = False,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Time `spec`'s training step (and eval, the reference loop, ablations): JSON-able dict."""
    dev = resolve_device(device)
    load_before = list(os.getloadavg())
    with _bench_data(spec, fake_data, data_dir) as (spec, data_dir):
        n = warmup + iters
        loop, ours_step = our_loop(spec, dev, weights_dir, n, compile=compile, data_dir=data_dir)
        loops = {"ours": ours_step}
        if reference:
            loops["reference"] = reference_step(spec, dev, weights_dir, n, data_dir)
        if compile:  # the same loop uncompiled, side by side
            loops["not_compiled"] = our_loop(spec, dev, weights_dir, n, data_dir=data_dir)[1]
        for undo in ABLATIONS if ablations else ():
            loops[undo] = our_loop(spec, dev, weights_dir, n, undo=undo, data_dir=data_dir)[1]
        dtype = torch.bfloat16 if spec.precision == "bf16" else torch.float32
        peak = matmul_peak(dev, dtype)
        timed_loops = interleaved(loops, warmup, iters, dev)
        ours = {
            **timed_loops["ours"],
            **({"eval": eval_rate(loop, eval_examples)} if eval_examples else {}),
        }
    peak = max(peak, matmul_peak(dev, dtype))  # the better of two: before and after the steps
    model, task = loop.model, loop.task
    flops = step_flops(model, task, spec.batch_size)
    T, B = task.input.n_tokens, spec.batch_size
    m = machine()
    out: dict[str, Any] = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "dtype": {"bf16": "bf16-autocast"}.get(spec.precision, spec.precision),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": {**m, "loadavg_before": load_before},
        "run": {
            **run_summary(spec, task),
            "micro_batch_size": spec.micro_batch_size,
            "compile": compile,
        },
        "params": {
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "frozen_with_grad": sum(
                p.numel() for p in model.parameters() if not p.requires_grad and p.grad is not None
            ),
        },
        "flop_per_step": flops,
        "matmul_peak_flops": peak,
        "ours": {**rates(flops, ours["step_s"], peak, B, T), "warmup_s": ours["warmup_s"]},
    }
    if "eval" in ours:
        ev = ours["eval"]
        fl = forward_flops(model, task, 1) * ev["examples_per_s"]
        out["ours"]["eval"] = {**ev, "flops": fl, "fraction_of_peak": fl / peak}
    if reference:
        ref_s = timed_loops["reference"]["step_s"]
        out["reference"] = rates(flops, ref_s, peak, B, T)
        out["speedup_vs_reference"] = ref_s / ours["step_s"]
    if compile:
        out["not_compiled_step_s"] = timed_loops["not_compiled"]["step_s"]
        out["compile_speedup"] = timed_loops["not_compiled"]["step_s"] / ours["step_s"]
    if ablations:
        out["ablations"] = {
            undo: {
                "step_s": timed_loops[undo]["step_s"],
                "ours_speedup": timed_loops[undo]["step_s"] / ours["step_s"],
            }
            for undo in ABLATIONS
        }
    out["machine"]["loadavg_after"] = list(os.getloadavg())
    return out
