"""One model per distinct shape, on the meta device: what the estimates need from a run's
model (its FLOPs, sizes and kernel counts), cached in the process and on disk.

The disk cache lets a later process (each Snakemake dry run evaluates the train jobs'
resources) build no model and import no transformers model code: a JSON file, valid for one
fingerprint of the code and libraries that make a shape. FPT_PLAN_CACHE: its path, or "off";
default $XDG_CACHE_HOME/fpt/plan-shapes.json (~/.cache/...)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fpt.plan.kernels import model_kernels
from fpt.spec import RunSpec

CACHE_ENV = "FPT_PLAN_CACHE"
FPT_ROOT = Path(__file__).resolve().parents[1]  # the fpt package


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need from a model: its FLOPs per example, sizes and kernel counts."""

    fwd: int  # FLOPs per example (FPT.flops_per_example)
    dx: int
    dw: int
    head_fwd: int  # the output layer's forward FLOPs per example
    tokens: int
    width: int
    layers: int
    total_params: int
    trainable_params: int
    trainable_tensors: int
    backprop: bool  # gradients flow below the head
    kernels_train: int  # forward kernels of one training micro-batch
    kernels_eval: int  # forward kernels of one evaluation batch
    input_bytes: int  # one example of the dataset in memory


SHAPES: dict[tuple, ModelShape] = {}  # this process's shapes, by shape key
DISK: dict[str, Any] = {}  # the disk cache: "path", "shapes" (disk key -> fields), "dirty"


def model_shape(spec: RunSpec) -> ModelShape:
    """The ModelShape of `spec`'s model, built once per distinct shape (cached in the
    process, and on disk across processes: see CACHE_ENV)."""
    key = _shape_key(spec)
    shape = SHAPES.get(key)
    if shape is not None:
        return shape
    disk = _disk_shapes()
    text = _disk_key(spec, key) if DISK["path"] is not None else ""
    if text in disk:
        shape = ModelShape(**disk[text])
    else:
        shape = build_shape(spec)
        if DISK["path"] is not None:
            if not DISK["dirty"]:
                import atexit

                atexit.register(save_shape_cache)
            disk[text] = dataclasses.asdict(shape)
            DISK["dirty"] = True
    SHAPES[key] = shape
    return shape


def build_shape(spec: RunSpec) -> ModelShape:
    """`spec`'s model built on the meta device (as `fpt describe` builds it), measured."""
    import torch

    from fpt.models.fpt import FPT
    from fpt.tasks import TASKS

    inp, head = TASKS[spec.task].shapes(dict(spec.options))
    bb = _backbone(spec.backbone, spec.size, spec.depth_int, spec.lstm_cell, spec.backbone_dropout)
    with torch.device("meta"):
        model = FPT(bb, inp, head, input_init=spec.input_init)
    model.freeze(spec.trainable)
    fwd, dx, dw = model.flops_per_example()
    trainable = [p for p in model.parameters() if p.requires_grad]
    per_token = inp.dim if inp.kind == "continuous" else 8  # pixels as uint8; token ids int64
    return ModelShape(
        fwd=fwd,
        dx=dx,
        dw=dw,
        head_fwd=head.n_answer_tokens * 2 * bb.width * head.outputs_per_token * head.n_classes,
        tokens=inp.n_tokens,
        width=bb.width,
        layers=bb.n_layers,
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in trainable),
        trainable_tensors=len(trainable),
        backprop=dx > 0,
        kernels_train=model_kernels(model, training=True),
        kernels_eval=model_kernels(model, training=False),
        input_bytes=inp.n_tokens * per_token,
    )


@cache
def _backbone(backbone: str, size: str, depth: int | None, lstm_cell: str, dropout: float | None):
    """One meta-device backbone per architecture, shared by the shapes built on it (each
    shape is computed right after its preset is applied)."""
    import torch

    from fpt.models.build import build_backbone

    with torch.device("meta"):
        return build_backbone(
            backbone,
            size,
            "random",
            depth,
            lstm_cell=lstm_cell,
            backbone_dropout=dropout,
        )


def _shape_key(spec: RunSpec) -> tuple:
    return (
        spec.task,
        json.dumps(spec.options, sort_keys=True, default=str),
        spec.backbone,
        spec.size,
        spec.trainable,
        spec.depth,
        spec.input_init,
        spec.lstm_cell,
        spec.backbone_dropout,
    )


# ---- the disk cache ---------------------------------------------------------------------------


def save_shape_cache() -> None:
    """Write the shapes built in this process to the disk cache (atomically; a concurrent
    writer's entries may be lost, never corrupted). Called at exit and by `plan`."""
    path = DISK.get("path")
    if path is None or not DISK.get("dirty"):
        return
    from fpt import files

    try:
        text = json.dumps({"fingerprint": _fingerprint(), "shapes": DISK["shapes"]})
        files.write_text(path, text)
        DISK["dirty"] = False
    except OSError:
        pass  # a cache: the next process builds the models again


def _cache_path() -> Path | None:
    import os

    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "no", "false") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fpt" / "plan-shapes.json"


@cache
def _fingerprint() -> str:
    """A hash of what a ModelShape depends on: this package (fpt.plan), fpt's models (code
    and shipped configs) and tasks, torch's and transformers' versions."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha1()
    for dist in ("torch", "transformers"):
        try:
            h.update(f"{dist}={version(dist)};".encode())
        except PackageNotFoundError:
            h.update(f"{dist}=none;".encode())
    files = [
        *sorted((FPT_ROOT / "plan").glob("*.py")),
        *sorted((FPT_ROOT / "models").rglob("*.py")),
        *sorted((FPT_ROOT / "models").rglob("*.json")),
        *sorted((FPT_ROOT / "tasks").rglob("*.py")),
    ]
    for f in files:
        h.update(str(f.relative_to(FPT_ROOT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _disk_key(spec: RunSpec, key: tuple) -> str:
    """The shape key as text, with the source of a task from outside fpt (task_modules)."""
    import hashlib
    import inspect

    from fpt.tasks import TASKS

    extra = ""
    module = inspect.getsourcefile(TASKS[spec.task]) or ""
    if module and not Path(module).resolve().is_relative_to(FPT_ROOT):
        extra = hashlib.sha1(Path(module).read_bytes()).hexdigest()
    return json.dumps([*key, extra], default=str)


def _disk_shapes() -> dict[str, Any]:
    path = _cache_path()
    if "path" not in DISK or DISK["path"] != path:
        DISK.clear()
        DISK.update(path=path, shapes={}, dirty=False)
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("fingerprint") == _fingerprint():
                    DISK["shapes"] = dict(data["shapes"])
            except (OSError, ValueError, KeyError, TypeError):
                pass  # unreadable: rebuilt and rewritten
    return DISK["shapes"]
