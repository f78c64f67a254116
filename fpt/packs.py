"""Which runs may train as one fused pack (fpt.fused), and how a grid's runs are packed.

Runs pack when they differ only in seed and/or lr (identical shapes) and their backbone's
family is vmap-traceable (`Family.packs`). A pack holds its frozen weights once only when
they are the same tensors in every run: pretrained weights are; a random, statistics-only or
Bit Memory-initialised backbone is drawn from the seed, so such runs pack only with runs of
the same seed (the swept protocol's learning rates). Random backbones of different seeds
would need per-run frozen weights in the pack, which does not pay on this CPU (BENCHMARKS.md,
"Fused runs"), so the grid keeps them lone.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

from fpt.models.families import family
from fpt.spec import RunSpec

# The settings a pack's runs may differ in: everything else (and so every shape) is shared.
FREE_AXES = ("seed", "lr")


def pack_key(spec: RunSpec) -> str:
    """What must be equal for runs to share a pack: the spec with its seed and lr blanked
    (as its path: a spec holds a dict and is not hashable)."""
    return dataclasses.replace(spec, seed=0, lr=0.0).path


def frozen_key(spec: RunSpec) -> str:
    """Runs with equal keys have the same frozen weights (held once in a pack)."""
    return pack_key(spec) if spec.init == "pretrained" else f"{pack_key(spec)} seed {spec.seed}"


def why_not_packable(specs: list[RunSpec]) -> str | None:
    """Why `specs` cannot train as one pack, or None when they can."""
    if len({pack_key(s) for s in specs}) != 1:
        return f"the runs differ in more than {' and '.join(FREE_AXES)}"
    if len({s.path for s in specs}) != len(specs):
        return "a run is in the pack twice"
    spec = specs[0]
    if not family(spec.backbone).packs:
        return f"the {spec.backbone} backbone does not train fused (Family.packs)"
    if spec.precision not in family(spec.backbone).pack_precisions:
        return (
            f"{spec.backbone} runs do not train fused in {spec.precision} (Family.pack_precisions)"
        )
    if spec.init == "bit_memory":
        return "init=bit_memory runs load their source run's backbone (train them lone)"
    if spec.options.get("cache_features"):
        return "cache_features trains a cached head, not the model"
    return None


def pack_runs(runs: Mapping[str, RunSpec], pack_size: int) -> dict[str, list[str]]:
    """The grid's packs, pack name -> its run paths (at most `pack_size` each, in seed, lr
    order): runs of one `frozen_key` that can pack, chunked. Runs in no pack (pack_size 1, a
    group of one, or not packable) train lone. A pack's name is a hash of its runs' paths."""
    if pack_size <= 1:
        return {}
    groups: dict[str, list[str]] = {}
    for path, spec in runs.items():
        if why_not_packable([spec]) is None:
            groups.setdefault(frozen_key(spec), []).append(path)
    packs: dict[str, list[str]] = {}
    for paths in groups.values():
        paths.sort(key=lambda p: (runs[p].seed, runs[p].lr, p))
        for i in range(0, len(paths), pack_size):
            chunk = paths[i : i + pack_size]
            if len(chunk) > 1:
                digest = hashlib.sha1("\n".join(chunk).encode()).hexdigest()[:12]
                packs[f"pack-{digest}"] = chunk
    return packs
