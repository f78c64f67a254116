"""`fpt bench-scaling`: training-step time vs sequence length and vs model size on this
machine, written as JSON, a Markdown table and a figure (PNG).

Sequence length: Bit XOR with n_bits = T/2 (T tokens of one bit each), GPT-2 small, random
init, FPT preset, batch 1. Model size: the same at T = 64 for GPT-2 small, medium, large
and xl (random init from the shipped configs). A point whose predicted time (from the
previous points) would exceed the budget is skipped and listed as skipped.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from fpt.bench.step import step_flops, time_our_step
from fpt.bench.timing import matmul_peak
from fpt.spec import RunSpec

SEQ_LENS = (10, 32, 64, 128, 256, 512, 1024)
SIZES = ("small", "medium", "large", "xl")


def _spec(size: str, tokens: int, batch: int) -> RunSpec:
    return RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size=size,
        init="random",
        trainable="fpt",
        batch_size=batch,
        micro_batch_size=batch,
        options={"n_bits": tokens // 2, "val_size": 4, "test_size": 4},
    )


def _point(size: str, tokens: int, batch: int, iters: int, peak: float) -> dict[str, Any]:
    spec = _spec(size, tokens, batch)
    t0 = time.perf_counter()
    loop, t = time_our_step(spec, torch.device("cpu"), 1, iters)
    flops = step_flops(loop.model, loop.task, batch)
    tokens = loop.task.input.n_tokens
    return {
        "size": size,
        "tokens": tokens,
        "batch_size": batch,
        "params": sum(p.numel() for p in loop.model.parameters()),
        "step_s": t["step_s"],
        "tokens_per_s": batch * tokens / t["step_s"],
        "flop_per_step": flops,
        "fraction_of_peak": flops / t["step_s"] / peak,
        "wall_s": time.perf_counter() - t0,
    }


def bench_scaling(
    out_dir: Path,
    seq_lens: tuple[int, ...] = SEQ_LENS,
    sizes: tuple[str, ...] = SIZES,
    size_tokens: int = 64,
    batch: int = 1,
    iters: int = 2,
    point_budget_s: float = 60.0,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    load = list(os.getloadavg())
    peak = matmul_peak(torch.device("cpu"), torch.float32)
    seq, by_size, skipped = [], [], []
    for T in seq_lens:
        if seq and seq[-1]["wall_s"] * (T / seq[-1]["tokens"]) ** 1.2 > point_budget_s:
            skipped.append({"size": "small", "tokens": T, "why": "predicted over the budget"})
            continue
        seq.append(_point("small", T, batch, iters, peak))
    params = {"small": 124e6, "medium": 355e6, "large": 774e6, "xl": 1558e6}
    for s in sizes:
        prev = by_size[-1] if by_size else None
        if prev and prev["wall_s"] * params[s] / params[prev["size"]] > point_budget_s:
            skipped.append({"size": s, "tokens": size_tokens, "why": "predicted over the budget"})
            continue
        by_size.append(_point(s, size_tokens, batch, iters, peak))
    result = {
        "matmul_peak_flops": peak,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loadavg_before": load,
        "loadavg_after": list(os.getloadavg()),
        "seq_len": seq,
        "model_size": by_size,
        "skipped": skipped,
    }
    (out_dir / "scaling.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "scaling.md").write_text(_table(result))
    _figure(result, out_dir / "scaling.png")
    return result


def _table(r: dict[str, Any]) -> str:
    lines = [
        "| model | tokens | batch | step (ms) | tokens/s | fraction of fp32 matmul peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in r["seq_len"] + [p for p in r["model_size"] if p["size"] != "small"]:
        lines.append(
            f"| gpt2-{p['size']} | {p['tokens']} | {p['batch_size']} | {1e3 * p['step_s']:.0f} "
            f"| {p['tokens_per_s']:.0f} | {p['fraction_of_peak']:.2f} |"
        )
    for s in r["skipped"]:
        lines.append(f"| gpt2-{s['size']} | {s['tokens']} | - | skipped: {s['why']} | | |")
    return "\n".join(lines) + "\n"


def _figure(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    seq = r["seq_len"]
    a.loglog([p["tokens"] for p in seq], [p["step_s"] * 1e3 for p in seq], "o-")
    a.set_xlabel("sequence length (tokens)")
    a.set_ylabel("training step (ms), batch 1")
    a.set_title("GPT-2 small, FPT preset")
    size = r["model_size"]
    b.loglog([p["params"] / 1e6 for p in size], [p["step_s"] * 1e3 for p in size], "o-")
    for p in size:
        b.annotate(p["size"], (p["params"] / 1e6, p["step_s"] * 1e3))
    b.set_xlabel("parameters (M)")
    b.set_ylabel("training step (ms), batch 1")
    b.set_title(f"{size[0]['tokens'] if size else ''} tokens, FPT preset")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
    load = "/".join(f"{x:.1f}" for x in r["loadavg_before"])
    fig.suptitle(f"CPU, {r['threads']} threads, torch {r['torch']}, load avg {load}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
