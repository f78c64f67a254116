"""Backbone initialisations beyond `pretrained` and `random` (the `init` axis).

- `stats`: "statistics only" init. The pretrained model is loaded, then every parameter tensor
  is redrawn i.i.d. from a Gaussian with that tensor's own mean and standard deviation
  (granularity: per tensor, e.g. one mean/std for a whole attention projection matrix, one for
  each bias vector, one for each layer-norm scale). A one-element tensor keeps its value
  (std 0). Draws come from the global torch RNG, so the run's seed fixes them. Layers we add
  (input/output layers, ViT's new position table) are not touched.
- `bit_memory`: the backbone of a finished Bit Memory run (random init, everything trained,
  same backbone/size/depth/seed), loaded and then frozen like a pretrained one. The source
  run is an ordinary run of the grid; `bit_memory_source` derives it from the dependent
  run's spec and the config's Bit Memory settings, for the Snakefile and for `fpt train`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpt.models.backbones import Backbone
from fpt.models.weights import BackboneUnavailable
from fpt.spec import AXES, RunSpec

log = logging.getLogger("fpt.models.init")

INITS = ("pretrained", "random", "stats", "bit_memory")

# The axes a Bit Memory source run takes from its dependent run; the rest are fixed here.
SOURCE_FIXED = {"task": "bit_memory", "init": "random", "trainable": "full"}
SOURCE_INHERITED = (
    "backbone", "size", "depth", "input_init", "seed",  # axes
    "random_init", "backbone_dropout", "lstm_cell",  # how the backbone is drawn and built
)  # fmt: skip


@torch.no_grad()
def stats_init_(model: nn.Module) -> dict[str, tuple[float, float]]:
    """Redraw every parameter tensor of `model` from N(mean, std) of its pretrained values;
    return the (mean, std) used per parameter name. Tied tensors are drawn once."""
    used = {}
    for name, p in model.named_parameters():
        x = p.detach().float()
        mean = x.mean().item()
        std = x.std().item() if x.numel() > 1 else 0.0
        p.copy_(torch.randn(p.shape, dtype=torch.float32).mul_(std).add_(mean).to(p.dtype))
        used[name] = (mean, std)
    return used


def bit_memory_source(spec: RunSpec, settings: dict[str, Any]) -> RunSpec:
    """The Bit Memory pretraining run that an init=bit_memory run loads its backbone from.

    Axes: task bit_memory, init random, trainable full, and the dependent run's backbone,
    size, depth, input_init and seed (one source per seed), with its random_init,
    backbone_dropout and lstm_cell (the backbone it loads is built the same way). Every other setting (steps, lr,
    batch sizes, eval cadence, task options) comes from `settings`: the config's `defaults`
    merged with `tasks.bit_memory` (fpt.grid passes exactly that), i.e. the run a grid point
    {task: bit_memory, init: random, trainable: full, ...} of the same config would be, so
    it is shared with such runs (Table 1's fully trained transformer)."""
    base = {k: v for k, v in settings.items() if k not in AXES or k == "lr"}
    d = {
        **RunSpec(task="bit_memory", backbone=spec.backbone, size=spec.size).to_json(),
        **base,
        **SOURCE_FIXED,
        **{k: getattr(spec, k) for k in SOURCE_INHERITED},
    }
    return RunSpec.from_json(d)


def check_source(spec: RunSpec, source_dir: Path) -> RunSpec:
    """The source run's spec (from its spec.json), checked to be the run that
    bit_memory_source derives for `spec` with the source's own settings."""
    spec_file = source_dir / "spec.json"
    if not spec_file.exists():
        raise BackboneUnavailable(
            f"init=bit_memory: {source_dir} is not a run folder (no spec.json); train the Bit "
            "Memory source run first (the workflow does it before this run)"
        )
    src = RunSpec.from_json(json.loads(spec_file.read_text()))
    expected = bit_memory_source(spec, src.to_json())
    if expected != src:
        raise BackboneUnavailable(
            f"init=bit_memory: {source_dir} holds {src.path}, but this run needs a Bit Memory "
            f"run with the axes of {expected.path}"
        )
    return src


def load_bit_memory_backbone(bb: Backbone, source_dir: Path) -> None:
    """Load the backbone tensors of the finished Bit Memory run in `source_dir` into `bb`.

    The source's final checkpoint (<run>/checkpoint/ckpt.pt, written by fpt.train at the end)
    holds its trainable tensors; with trainable=full that is every backbone tensor except the
    always-frozen `unused` ones (e.g. GPT-2's token table), which our forward never reads."""
    from fpt import checkpoint

    spec_file = source_dir / "spec.json"
    if not spec_file.exists():
        raise BackboneUnavailable(f"init=bit_memory: no spec.json in {source_dir}")
    spec_json = json.loads(spec_file.read_text())
    state = checkpoint.load_latest(source_dir / "checkpoint", spec_json)
    if state is None:
        raise BackboneUnavailable(
            f"init=bit_memory: no intact checkpoint in {source_dir / 'checkpoint'}; "
            "train the Bit Memory source run to the end first"
        )
    diverged = any(r.get("diverged") for r in state["rows"])
    if state["step"] < spec_json["steps"] and not diverged:
        raise BackboneUnavailable(
            f"init=bit_memory: the source run {source_dir} is unfinished "
            f"(step {state['step']} of {spec_json['steps']}); finish it first"
        )
    if diverged:
        log.warning("init=bit_memory: the source run %s diverged; loading it anyway", source_dir)
    prefix = "backbone."
    sub = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    result = bb.load_state_dict(sub, strict=False)
    unused = {id(p) for m in bb.groups().unused for p in m.parameters()}
    names = {n: p for n, p in bb.named_parameters()}
    missing = [k for k in result.missing_keys if k in names and id(names[k]) not in unused]
    if missing or result.unexpected_keys:
        raise BackboneUnavailable(
            f"init=bit_memory: the checkpoint in {source_dir} does not fit this backbone: "
            f"missing {missing[:5]}, unexpected {result.unexpected_keys[:5]} (was it trained "
            "with trainable=full on the same backbone, size and depth?)"
        )
