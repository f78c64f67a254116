"""A run's random streams in its checkpoint: the data generator, the global CPU stream
(dropout on CPU), the run's GPU's stream (dropout on CUDA) or, in a fused pack, the run's own
dropout generator; and what a resume on another kind of device does with them.

RNG states do not carry over between CPU and CUDA (they differ in kind and size), so the
device is saved with them. A run resumed on another device than its checkpoint's reseeds
every stream from a seed made of the run's seed and the step it resumes at (`reseed`): it
goes on, deterministically, but draws other batches and dropout masks than an uninterrupted
run would have. Checkpoints made before the device was recorded say so by a data state of
the wrong size.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger("fpt.rng")


def state(
    generator: torch.Generator, device: torch.device, dropout: torch.Generator | None = None
) -> dict[str, Any]:
    """The run's RNG states and the device they belong to."""
    out = {"device": device.type, "torch": torch.get_rng_state(), "data": generator.get_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    if dropout is not None:
        out["torch" if dropout.device.type == "cpu" else "dropout"] = dropout.get_state()
    return out


def reseed(
    seed: int, step: int, generator: torch.Generator, dropout: torch.Generator | None = None
) -> None:
    """Every stream from a seed made of the run's seed and the step it resumes at."""
    value = (seed * 1_000_003 + step) % 2**63
    torch.manual_seed(value)  # the global CPU stream and every GPU's
    generator.manual_seed(value + 1)
    if dropout is not None:
        dropout.manual_seed(value + 2)


def _restore(
    saved: dict[str, Any],
    generator: torch.Generator,
    device: torch.device,
    dropout: torch.Generator | None,
) -> bool:
    """`state`'s output back in place; False (nothing restored) when it is another device's."""
    if saved.get("device") not in (None, device.type):
        return False
    try:
        generator.set_state(saved["data"])
    except RuntimeError:  # "RNG state is wrong size": an older checkpoint from another device
        return False
    torch.set_rng_state(saved["torch"])
    if device.type == "cuda" and "cuda" in saved:
        cuda = saved["cuda"]  # older checkpoints: one state per visible GPU
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, list) else cuda, device)
    if dropout is not None:
        key = "torch" if dropout.device.type == "cpu" else "dropout"
        if key in saved:
            dropout.set_state(saved[key])
    return True


def restore(
    saved: dict[str, Any],
    generator: torch.Generator,
    device: torch.device,
    seed: int,
    step: int,
    dropout: torch.Generator | None = None,
) -> None:
    """Restore the run's streams, or on another device log it and `reseed` them."""
    if _restore(saved, generator, device, dropout):
        return
    log.warning(
        "resuming on %s a run checkpointed on %s: RNG states do not carry over between "
        "devices, so the data and dropout streams are reseeded from seed %d and step %d; the "
        "run goes on, with other draws than an uninterrupted run",
        device.type,
        saved.get("device", "another device"),
        seed,
        step,
    )
    reseed(seed, step, generator, dropout)
