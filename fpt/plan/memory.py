"""The memory model: the host RAM (what a job's `mem_mb` asks for) and the device memory of one
process training some runs together (fpt.plan's docstring has the model). Bytes unless named
otherwise."""

from __future__ import annotations

from collections.abc import Sequence

from fpt.plan.shapes import model_shape
from fpt.plan.splits import split_sizes
from fpt.spec import RunSpec

FLOOR_MB = 500  # Python, torch, transformers, fpt imported
# Host memory a CUDA process holds beyond FLOOR_MB: the CUDA runtime and the libraries a torch
# CUDA wheel loads (cuBLAS, cuDNN, NCCL, ...) with lazy module loading. Not measured by fpt
# yet: an assumption from the 3-4 GB resident that torch + transformers processes on CUDA are
# reported to hold (more with torch.compile). benchmarks/gpu_check.sh measures a CUDA training
# job's peak RSS (max_rss_mb in its train step); calibrate this from it.
CUDA_HOST_MB = 3000
CUDA_CONTEXT_MB = 500  # device memory of the CUDA context
LOAD_FACTOR = 1.5  # weights while loading: part of them held twice
ACT_BYTES = {
    "fp32": 68,
    "tf32": 68,
    "bf16": 40,
}  # stored per token x width x block (training)
EVAL_ACT_BYTES = 48  # transient per token x width during evaluation (one block at a time)


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
