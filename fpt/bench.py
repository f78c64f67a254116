"""`fpt bench`: time warm training steps and evaluation, count their FLOPs analytically,
and compare with (a) the machine's measured dense-matmul peak and (b) the same steps in a
reference-style loop (fp32, eager attention, a DataLoader over CPU tensors, per-step host
syncs, for-loop Adam), as the paper's reference code trains.

FLOPs per training step, counted from the model's shapes (nanoGPT-style, matmuls only):
  forward   F  = B * [T * (2*N_blk + 2*d_in*d + 4*L*T*d) + k * 2*d*o]
  backward  dX = B * [T * (2*N_blk + 8*L*T*d) + k * 2*d*o]   activation gradients through the
                    head and backbone (attention scores: both operands, 2x forward); skipped
                    when nothing below the head trains
            dW = B * [T * (2*N_blk_train + 2*d_in*d*[input trains]) + k * 2*d*o]
where N_blk = dense (2-D) weights in the attention and feed-forward blocks, N_blk_train the
trainable ones, T tokens, d width, L blocks, d_in input features per token (0 for an
embedding lookup), k answer tokens, o outputs per answer token. Attention scores count
in full (4*T*d per token and layer: QK^T and AV), as nanoGPT counts them. With everything
trainable this is nanoGPT's 6N + 12LTd per token.

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

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fpt import precision
from fpt.models import build_for_spec
from fpt.models.fpt import FPT
from fpt.spec import RunSpec
from fpt.tasks import Batch, Task, make_task
from fpt.train import resolve_device, train_step

# Ablations of our loop: each undoes one optimisation (the name says what is undone).
ABLATIONS = ("eager_attention", "frozen_weight_grads", "host_sync_per_step", "host_batches")


def step_flops(model: FPT, task: Task, batch_size: int) -> float:
    return float(batch_size * sum(_flops_per_example(model, task)))


def forward_flops(model: FPT, task: Task, batch_size: int) -> float:
    return float(batch_size * _flops_per_example(model, task)[0])


def _flops_per_example(model: FPT, task: Task) -> tuple[int, int, int]:
    """(forward, activation-gradient, weight-gradient) FLOPs of one example."""
    g = model.backbone.groups()
    blk = [p for mods in g.attn + g.ff for m in mods for p in m.parameters() if p.dim() == 2]
    n_blk = sum(p.numel() for p in blk)
    n_blk_train = sum(p.numel() for p in blk if p.requires_grad)
    T, d, L = task.input.n_tokens, model.backbone.width, model.backbone.n_layers
    d_in = task.input.dim if task.input.kind == "continuous" else 0
    k, o = task.head.n_answer_tokens, task.head.outputs_per_token * task.head.n_classes
    fwd = T * (2 * n_blk + 2 * d_in * d + 4 * L * T * d) + k * 2 * d * o
    below_head = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and not n.startswith("output_layer")
    ]
    dx = T * (2 * n_blk + 8 * L * T * d) + k * 2 * d * o if below_head else 0
    input_trains = any(p.requires_grad for p in model.input_layer.parameters())
    dw = T * (2 * n_blk_train + 2 * d_in * d * input_trains) + k * 2 * d * o
    return fwd, dx, dw


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


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


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was (load average: a figure taken
    while other work ran says so)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loadavg": list(os.getloadavg()),
    }


def matmul_peak(dev: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Best dense matmul FLOP/s over a few square sizes, measured here and now."""
    best = 0.0
    sizes = (1024, 2048, 4096) if dev.type == "cpu" else (4096, 8192)
    for n in sizes:
        a = torch.randn(n, n, device=dev, dtype=dtype)
        b = torch.randn(n, n, device=dev, dtype=dtype)
        torch.mm(a, b)
        _sync(dev)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / len(sizes):
            torch.mm(a, b)
            reps += 1
            if dev.type == "cuda" and reps % 10:
                continue
            _sync(dev)
        _sync(dev)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
    return best


def _timed(fn, iters: int, dev: torch.device) -> float:
    """Median seconds per call: robust to bursts of other work on a shared machine."""
    times = []
    for _ in range(iters):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fake_data_dir(task: str, root: Path, n_train: int = 512, n_test: int = 256) -> Path:
    """Random images in the real on-disk layouts (CIFAR-10 pickles, MNIST idx) under `root`,
    so image tasks can be benchmarked without a download. Speed does not depend on pixels."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    if task in ("cifar10", "cifar10_lra"):
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True, exist_ok=True)
        per = -(-n_train // 5)
        for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", n_test)]:
            batch = {
                b"labels": [int(v) for v in rng.integers(0, 10, n)],
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            }
            with open(d / name, "wb") as f:
                pickle.dump(batch, f)
    elif task == "mnist":
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            head = (2051).to_bytes(4, "big") + b"".join(x.to_bytes(4, "big") for x in (n, 28, 28))
            (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
                head + rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes()
            )
            labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
            (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
                (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + labels
            )
    else:
        raise ValueError(f"no fake data for task {task!r}; fake data exists for cifar10, mnist")
    return root


def _autocast_for(spec: RunSpec, dev: torch.device):
    """The run's own arithmetic (fpt.precision), as training sets it up."""
    return precision.configure(spec.precision, dev)


def _new_acc(dev: torch.device) -> dict[str, Any]:
    return {
        "loss": torch.zeros((), device=dev, dtype=torch.float64),
        "correct": torch.zeros((), device=dev, dtype=torch.int64),
        "n": 0,
    }


def _eval_batches(task: Task, n_examples: int, batch_size: int) -> list[Batch]:
    out, n = [], 0
    for b in task.eval_batches("test", min(batch_size, n_examples)):
        out.append(b)
        n += len(b)
        if n >= n_examples:
            break
    return out


def _setup_ours(
    spec: RunSpec,
    dev: torch.device,
    weights_dir,
    n_steps: int,
    undo: str | None = None,
    compile: bool = False,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    """Our training step (fpt.train.train_step) ready to time; `undo` names one ablation."""
    torch.manual_seed(spec.seed)
    task = make_task(spec.task, dev, spec.options, data_dir)
    eager = undo == "eager_attention"
    model = build_for_spec(spec, task, weights_dir, output_attentions=eager).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    if undo == "frozen_weight_grads":  # frozen weights get gradients (never used)
        for p in model.parameters():
            p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=spec.lr, **({"fused": True} if dev.type == "cuda" else {}))
    gen = torch.Generator(device=dev).manual_seed(spec.seed)
    autocast = _autocast_for(spec, dev)
    acc = _new_acc(dev)
    step_model = torch.compile(model) if compile else model
    host = None
    if undo == "host_batches":  # batches made on the host, through a DataLoader
        cpu_task = make_task(spec.task, torch.device("cpu"), spec.options, data_dir)
        data = cpu_task.train_batch(n_steps * spec.batch_size, torch.Generator())
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data.x, data.y), batch_size=spec.batch_size, shuffle=True
        )
        host = iter(loader)

    def step():
        if host is not None:
            x, y = next(host)
            batch = Batch(x.to(dev), y.to(dev))
        else:
            batch = task.train_batch(spec.batch_size, gen)
        if undo == "frozen_weight_grads":
            model.zero_grad(set_to_none=True)
        train_step(step_model, task, batch, opt, params, spec.micro_batch_size, autocast, acc)
        if undo == "host_sync_per_step":
            acc["loss"].item()

    return {"step": step, "model": model, "task": task, "step_model": step_model}


def _eval_rate(o: dict[str, Any], spec: RunSpec, dev: torch.device, n_examples: int):
    task, step_model, autocast = o["task"], o["step_model"], _autocast_for(spec, dev)
    batches = _eval_batches(task, n_examples, spec.eval_batch_size)

    @torch.inference_mode()
    def run_eval():
        step_model.eval()
        for b in batches:
            with autocast():
                logits = step_model(b.x, b.lengths)
            task.loss(logits, b.y), task.n_correct(logits, b.y)
        step_model.train()

    run_eval()  # warm
    eval_s = _timed(run_eval, 1, dev)
    n = sum(len(b) for b in batches)
    return {"examples": n, "batch_size": len(batches[0]), "examples_per_s": n / eval_s}


def _setup_reference(
    spec: RunSpec, dev: torch.device, weights_dir, n_steps: int, data_dir: Path | None = None
):
    """A step of a loop shaped like the paper's reference code."""
    torch.manual_seed(spec.seed)
    task = make_task(spec.task, torch.device("cpu"), spec.options, data_dir)
    # output_attentions=True builds the backbone with eager attention, as transformers 4.1 ran it.
    model = build_for_spec(spec, task, weights_dir, output_attentions=True).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=spec.lr, foreach=False)
    data = task.train_batch(n_steps * spec.batch_size, torch.Generator().manual_seed(spec.seed))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x, data.y), batch_size=spec.batch_size, shuffle=True
    )
    it = iter(loader)

    def step():
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


def _interleaved(steps: dict[str, Any], warmup: int, iters: int, dev) -> dict[str, dict]:
    """Warm every loop, then time them round-robin, one step each per round: a change in the
    machine's load during the run hits every loop alike, so their ratios stay fair."""
    out: dict[str, dict] = {}
    for name, fn in steps.items():
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(warmup):
            fn()
        _sync(dev)
        out[name] = {"warmup_s": time.perf_counter() - t0, "times": []}
    for _ in range(iters):
        for name, fn in steps.items():
            out[name]["times"].append(_timed(fn, 1, dev))
    for v in out.values():
        v["step_s"] = statistics.median(v.pop("times"))
    return out


def _ours(
    spec: RunSpec, dev: torch.device, warmup: int, iters: int, weights_dir, eval_examples: int
) -> dict[str, Any]:
    """Our step alone, timed warm (bench_scaling)."""
    o = _setup_ours(spec, dev, weights_dir, warmup + iters)
    t = _interleaved({"ours": o["step"]}, warmup, iters, dev)["ours"]
    return {
        **o,
        **t,
        **({"eval": _eval_rate(o, spec, dev, eval_examples)} if eval_examples else {}),
    }


def _rates(flops: float, step_s: float, peak: float, batch: int, tokens: int) -> dict[str, float]:
    return {
        "step_s": step_s,
        "steps_per_s": 1 / step_s,
        "samples_per_s": batch / step_s,
        "tokens_per_s": batch * tokens / step_s,
        "flops": flops / step_s,
        "fraction_of_peak": flops / step_s / peak,
    }


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
    tmp = None
    if fake_data:
        tmp = tempfile.TemporaryDirectory(prefix="fpt-bench-data-")
        fake_data_dir(spec.task, Path(tmp.name))
        # a small val split: the fake training set has only a few hundred images
        data_dir = Path(tmp.name)
        options = {"val_size": 64, **spec.options}
        spec = RunSpec.from_json({**spec.to_json(), "options": options})
    try:
        return _bench(
            spec,
            dev,
            warmup,
            iters,
            reference,
            weights_dir,
            eval_examples,
            compile,
            ablations,
            load_before,
            data_dir,
        )
    finally:
        if tmp is not None:
            tmp.cleanup()


def _bench(
    spec,
    dev,
    warmup,
    iters,
    reference,
    weights_dir,
    eval_examples,
    compile,
    ablations,
    load_before,
    data_dir=None,
) -> dict[str, Any]:
    n = warmup + iters
    o = _setup_ours(spec, dev, weights_dir, n, compile=compile, data_dir=data_dir)
    loops = {"ours": o["step"]}
    if reference:
        loops["reference"] = _setup_reference(spec, dev, weights_dir, n, data_dir)
    if compile:  # the same loop uncompiled, side by side
        loops["not_compiled"] = _setup_ours(spec, dev, weights_dir, n, data_dir=data_dir)["step"]
    for undo in ABLATIONS if ablations else ():
        loops[undo] = _setup_ours(spec, dev, weights_dir, n, undo=undo, data_dir=data_dir)["step"]
    dtype = torch.bfloat16 if spec.precision == "bf16" else torch.float32
    peak = matmul_peak(dev, dtype)
    timed = _interleaved(loops, warmup, iters, dev)
    ours = {
        **timed["ours"],
        **({"eval": _eval_rate(o, spec, dev, eval_examples)} if eval_examples else {}),
    }
    peak = max(peak, matmul_peak(dev, dtype))  # the better of two: before and after the steps
    model, task = o["model"], o["task"]
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
        "ours": {**_rates(flops, ours["step_s"], peak, B, T), "warmup_s": ours["warmup_s"]},
    }
    if "eval" in ours:
        ev = ours["eval"]
        fl = forward_flops(model, task, 1) * ev["examples_per_s"]
        out["ours"]["eval"] = {**ev, "flops": fl, "fraction_of_peak": fl / peak}
    if reference:
        ref_s = timed["reference"]["step_s"]
        out["reference"] = _rates(flops, ref_s, peak, B, T)
        out["speedup_vs_reference"] = ref_s / ours["step_s"]
    if compile:
        out["not_compiled_step_s"] = timed["not_compiled"]["step_s"]
        out["compile_speedup"] = timed["not_compiled"]["step_s"] / ours["step_s"]
    if ablations:
        out["ablations"] = {
            undo: {
                "step_s": timed[undo]["step_s"],
                "ours_speedup": timed[undo]["step_s"] / ours["step_s"],
            }
            for undo in ABLATIONS
        }
    out["machine"]["loadavg_after"] = list(os.getloadavg())
    return out
