"""Backbones, freezing presets and the FPT wrapper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fpt.models.build import build_backbone
from fpt.models.families import FAMILIES
from fpt.models.fpt import FPT, count_params
from fpt.models.freezing import PRESETS
from fpt.models.init import INITS
from fpt.models.weights import BackboneUnavailable
from fpt.tasks.base import Task


def build_model(
    task: Task,
    backbone: str,
    size: str,
    init: str,
    trainable: str,
    depth: int | None = None,
    input_init: str = "orthogonal",
    weights_dir: Path | None = None,
    output_attentions: bool = False,
    init_from: Path | None = None,
    **backbone_settings: Any,
) -> FPT:
    """The FPT model for one run, frozen per `trainable`. Seed torch before calling: random
    backbone weights and the new layers come from the global RNG. `init_from`: the Bit
    Memory source run folder, for init=bit_memory. `backbone_settings`: random_init,
    backbone_dropout, lstm_cell (fpt.models.build.build_backbone)."""
    bb = build_backbone(
        backbone, size, init, depth, weights_dir, output_attentions, init_from, **backbone_settings
    )
    model = FPT(bb, task.input, task.head, input_init=input_init)
    model.freeze(trainable)
    return model


def build_for_spec(spec, task: Task, weights_dir: Path | None = None, **kwargs) -> FPT:
    """`build_model` with the model axes and settings of a RunSpec (kwargs:
    output_attentions, init_from)."""
    return build_model(
        task,
        spec.backbone,
        spec.size,
        spec.init,
        spec.trainable,
        spec.depth_int,
        spec.input_init,
        weights_dir,
        random_init=spec.random_init,
        backbone_dropout=spec.backbone_dropout,
        lstm_cell=spec.lstm_cell,
        **kwargs,
    )


__all__ = [
    "build_for_spec",
    "FAMILIES",
    "FPT",
    "INITS",
    "PRESETS",
    "BackboneUnavailable",
    "build_model",
    "count_params",
]
