"""First-layer attention of a trained run, from its final checkpoint (rule `attention`).

The model is rebuilt exactly as `fpt train` built it (same seed, task, init: frozen weights
are not in the checkpoint), the trained parameters are loaded from the final checkpoint, and
the first block's attention probabilities are averaged over heads and test examples. The
arrays go to `<results>/attention/<run>/first_layer.npz`, which the figure reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpt import files

ATTENTION_TASKS = ("bit_xor", "bit_memory")
ATTENTION_INITS = ("pretrained", "random")


def attention_path(run: str) -> str:
    """Where a run's attention arrays live, relative to the results dir."""
    return f"attention/{run}/first_layer.npz"


def attention_runs(grid: Any, experiments: tuple[str, ...]) -> list[str]:
    """The runs the figure shows: per bit task, transformer backbone and size, and init
    (pretrained, random), the FPT run with the lowest seed."""
    chosen: dict[tuple, tuple[int, str]] = {}
    for exp in experiments:
        for run in grid.experiments[exp]:
            s = grid.runs[run]
            if (
                s.task in ATTENTION_TASKS
                and s.init in ATTENTION_INITS
                and s.trainable == "fpt"
                and s.backbone != "lstm"
            ):
                key = (s.task, s.backbone, s.size, s.init)
                chosen[key] = min(chosen.get(key, (s.seed, run)), (s.seed, run))
    return [run for _, run in sorted(chosen.values(), key=lambda v: v[1])]


def operand_positions(task, answer: int) -> list[int]:
    """Input positions the `answer`-th answer token needs: Bit XOR, the same bit of both
    strings; Bit Memory, the same patch of each memorised string."""
    if task.name == "bit_xor":
        return [answer, task.n_bits + answer]
    if task.name == "bit_memory":
        per = task.n_bits // task.patch
        return [k * per + answer for k in range(task.n_strings)]
    raise ValueError(f"no operand positions defined for task {task.name}")


def first_layer_attention(
    run_dir: Path,
    weights_dir: Path | None = None,
    data_dir: Path | None = None,
    init_from: Path | None = None,
    n_examples: int = 256,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    from fpt import checkpoint
    from fpt.spec import RunSpec
    from fpt.train import build_run, resolve_device

    run_dir = Path(run_dir)
    spec_json = json.loads((run_dir / "spec.json").read_text())
    spec = RunSpec.from_json(spec_json)
    # metrics.parquet is written after the final checkpoint: with it, the checkpoint is final.
    state = checkpoint.load_latest(run_dir / "checkpoint", spec.to_json())
    if state is None or not (run_dir / "metrics.parquet").exists():
        raise FileNotFoundError(
            f"{run_dir} holds no finished run (final checkpoint + metrics.parquet). Fix: finish "
            f"it first (snakemake {run_dir}/metrics.parquet), then ask for its attention maps."
        )
    dev = resolve_device(device)
    _, task, model = build_run(spec, dev, weights_dir, data_dir, init_from, output_attentions=True)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected:
        raise ValueError(f"{run_dir}: checkpoint has parameters the model lacks: {unexpected[:5]}")
    model.eval()
    batch = task.eval_set("test")
    x, y = batch.x[:n_examples], batch.y[:n_examples]
    with torch.inference_mode():
        answer, attn = model.features(x, None, output_attentions=True)
        logits = model.head_logits(answer)
    first = attn[0].float().mean(dim=(0, 1)).cpu().numpy()  # (T, T): heads, examples averaged
    k, n_tokens = task.head.n_answer_tokens, task.input.n_tokens
    answer_pos = np.arange(n_tokens - k, n_tokens)
    operands = np.array([operand_positions(task, j) for j in range(k)])
    return {
        "attention": first,
        "answer_positions": answer_pos,
        "operand_positions": operands,
        "accuracy": np.array(float(task.n_correct(logits, y)) / y.numel()),
        "n_examples": np.array(x.shape[0]),
        "step": np.array(state["step"]),
        "spec": np.array(json.dumps(spec_json, sort_keys=True)),
    }


def save(arrays: dict[str, np.ndarray], out: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a name
            np.savez(fh, **arrays)

    files.write_with(out, write)
