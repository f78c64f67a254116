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
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch

from fpt.models import build_for_spec
from fpt.models.fpt import FPT
from fpt.spec import RunSpec
from fpt.tasks import Task, make_task
from fpt.train import evaluate, resolve_device, train_step


def step_flops(model: FPT, task: Task, batch_size: int) -> float:
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
    return float(batch_size * (fwd + dx + dw))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


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
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / iters


def _ours(spec: RunSpec, dev: torch.device, warmup: int, iters: int, weights_dir) -> dict[str, Any]:
    torch.manual_seed(spec.seed)
    task = make_task(spec.task, dev, spec.options)
    model = build_for_spec(spec, task, weights_dir).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=spec.lr, **({"fused": True} if dev.type == "cuda" else {}))
    gen = torch.Generator(device=dev).manual_seed(spec.seed)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()

    acc = {
        "loss": torch.zeros((), device=dev, dtype=torch.float64),
        "correct": torch.zeros((), device=dev, dtype=torch.int64),
        "n": 0,
    }

    def step():
        train_step(
            model,
            task,
            task.train_batch(spec.batch_size, gen),
            opt,
            params,
            spec.micro_batch_size,
            autocast,
            acc,
        )

    for _ in range(warmup):
        step()
    step_s = _timed(step, iters, dev)
    evaluate(model, task, "test", spec.eval_batch_size, autocast)  # warm: builds the fixed set
    eval_s = _timed(lambda: evaluate(model, task, "test", spec.eval_batch_size, autocast), 1, dev)
    n_eval = sum(len(b) for b in task.eval_batches("test", spec.eval_batch_size))
    return {"model": model, "task": task, "step_s": step_s, "eval_examples_per_s": n_eval / eval_s}


def _reference(spec: RunSpec, dev: torch.device, warmup: int, iters: int, weights_dir) -> float:
    """Seconds per step of a loop shaped like the paper's reference code."""
    torch.manual_seed(spec.seed)
    task = make_task(spec.task, torch.device("cpu"), spec.options)
    # output_attentions=True builds the backbone with eager attention, as transformers 4.1 ran it.
    model = build_for_spec(spec, task, weights_dir, output_attentions=True).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=spec.lr, foreach=False)
    n = (warmup + iters) * spec.batch_size
    data = task.train_batch(n, torch.Generator().manual_seed(spec.seed))
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

    for _ in range(warmup):
        step()
    return _timed(step, iters, dev)


def bench(
    spec: RunSpec,
    device: str = "auto",
    warmup: int = 3,
    iters: int = 10,
    reference: bool = True,
    weights_dir=None,
) -> dict[str, Any]:
    dev = resolve_device(device)
    ours = _ours(spec, dev, warmup, iters, weights_dir)
    model, task = ours["model"], ours["task"]
    flops = step_flops(model, task, spec.batch_size)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    peak = matmul_peak(dev, dtype)
    tokens = spec.batch_size * task.input.n_tokens
    out: dict[str, Any] = {
        "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "dtype": "bf16-autocast" if dev.type == "cuda" else "fp32",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "run": {
            "task": spec.task,
            "backbone": spec.backbone,
            "size": spec.size,
            "init": spec.init,
            "trainable": spec.trainable,
            "batch_size": spec.batch_size,
            "tokens": task.input.n_tokens,
        },
        "flop_per_step": flops,
        "matmul_peak_flops": peak,
        "ours": {
            "step_s": ours["step_s"],
            "steps_per_s": 1 / ours["step_s"],
            "samples_per_s": spec.batch_size / ours["step_s"],
            "tokens_per_s": tokens / ours["step_s"],
            "flops": flops / ours["step_s"],
            "fraction_of_peak": flops / ours["step_s"] / peak,
            "eval_examples_per_s": ours["eval_examples_per_s"],
        },
    }
    if reference:
        ref_s = _reference(spec, dev, warmup, iters, weights_dir)
        out["reference"] = {
            "step_s": ref_s,
            "steps_per_s": 1 / ref_s,
            "flops": flops / ref_s,
            "fraction_of_peak": flops / ref_s / peak,
        }
        out["speedup_vs_reference"] = ref_s / ours["step_s"]
    return out
