"""RunSpec: everything that defines one training run, its hive-style path and its CLI form.

Grid axes appear in the run path as `axis=value` folders so pandas/pyarrow read them as
columns; the remaining settings (steps, batch sizes, eval cadence, task options) are hashed
into the last folder, so a changed hyperparameter is a different run and never reuses
stale results or checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

AXES = ("task", "backbone", "size", "init", "trainable", "depth", "input_init", "lr", "seed")
PRECISIONS = ("fp32", "tf32", "bf16")
RANDOM_INITS = ("paper", "library")
LSTM_CELLS = ("reference", "fused")


@dataclass(frozen=True)
class LaterSetting:
    """A setting added after runs already existed.

    `legacy(spec)` is the value that reproduces what fpt did before the setting existed;
    `applies(spec)` says whether the setting changes the run at all (random_init changes
    nothing for a pretrained backbone). The settings hash leaves the setting out where it
    does not apply or holds its legacy value, so adding a setting renames exactly the runs
    it changes. The JSON form and the CLI leave it out at its default, so both round-trip;
    where it does not apply it is reset to its default (one spec, one form)."""

    legacy: Callable[[RunSpec], Any]
    applies: Callable[[RunSpec], bool] = lambda spec: True


def _random_backbone(spec: RunSpec) -> bool:
    """A backbone drawn from an init scheme: random, or random before the Bit Memory load."""
    return spec.init in ("random", "bit_memory") and spec.backbone != "lstm"


LATER_SETTINGS: dict[str, LaterSetting] = {
    "patience": LaterSetting(legacy=lambda s: 0),
    # GPU runs were bf16 before `precision` existed; CPU runs (all that were made) fp32.
    "precision": LaterSetting(legacy=lambda s: "fp32"),
    "random_init": LaterSetting(legacy=lambda s: "library", applies=_random_backbone),
    # None = the reference's dropout for the family; ViT's was 0 before (not the reference's).
    "backbone_dropout": LaterSetting(legacy=lambda s: 0.0 if s.backbone == "vit" else None),
    "lstm_cell": LaterSetting(legacy=lambda s: "fused", applies=lambda s: s.backbone == "lstm"),
}


# What a run path looks like (`RunSpec.path`), for the Snakemake wildcards that hold one.
RUN_PATH_PATTERN = r"task=[^ ]+?/settings=[0-9a-f]{8}"


def fmt_lr(lr: float) -> str:
    return f"{float(lr):g}"


@dataclass(frozen=True)
class RunSpec:
    task: str
    backbone: str
    size: str
    init: str = "pretrained"
    trainable: str = "fpt"
    depth: int | str = "all"
    input_init: str = "orthogonal"
    lr: float = 1e-3
    seed: int = 0
    steps: int = 1000
    batch_size: int = 4
    # Examples per forward/backward (gradient accumulation); at most batch_size: a larger
    # value is clamped here, so every way of making a spec gives the run one path.
    micro_batch_size: int = 16
    eval_every: int = 100
    eval_batch_size: int = 256
    ckpt_every: int = 500
    options: dict[str, Any] = field(default_factory=dict)
    # Early stopping: end the run after this many evaluations without a new best validation
    # accuracy and restore the best weights (fpt.train); 0 = off (the paper's protocol).
    patience: int = 0
    # Arithmetic (fpt.precision): fp32 as the paper trained; tf32 / bf16 autocast on CUDA.
    precision: str = "fp32"
    # How a random backbone is drawn (fpt.models.random_init): `paper` = the reference's
    # transformers 4.1.1 scheme, `library` = whatever the installed transformers does.
    random_init: str = "paper"
    # Dropout inside the backbone: None = the reference's for the family (ViT: 0.1 on hidden
    # states, attention and after the positions); a number overrides every dropout of it.
    backbone_dropout: float | None = None
    # The LSTM baseline's cell (fpt.models.lstm): `reference` = the paper's layer-norm LSTM.
    lstm_cell: str = "reference"

    def __post_init__(self) -> None:
        if self.micro_batch_size > self.batch_size:
            object.__setattr__(self, "micro_batch_size", self.batch_size)
        for name, later in LATER_SETTINGS.items():
            if not later.applies(self):
                object.__setattr__(self, name, _DEFAULTS[name])

    def _dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if k not in LATER_SETTINGS or v != _DEFAULTS[k]}

    def settings(self) -> dict[str, Any]:
        """The non-axis settings that define the run (hashed into its path)."""
        d = asdict(self)
        return {
            k: v
            for k, v in d.items()
            if k not in AXES
            and not (
                k in LATER_SETTINGS
                and (not LATER_SETTINGS[k].applies(self) or v == LATER_SETTINGS[k].legacy(self))
            )
        }

    def settings_hash(self) -> str:
        blob = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:8]

    def axis_values(self) -> dict[str, str]:
        vals = {a: str(getattr(self, a)) for a in AXES}
        vals["lr"] = fmt_lr(self.lr)
        return vals

    @property
    def path(self) -> str:
        """Hive-style relative run path, e.g. task=bit_xor/backbone=gpt2/.../settings=1a2b3c4d."""
        parts = [f"{k}={v}" for k, v in self.axis_values().items()]
        return "/".join(parts + [f"settings={self.settings_hash()}"])

    @property
    def depth_int(self) -> int | None:
        return None if self.depth == "all" else int(self.depth)

    def to_json(self) -> dict[str, Any]:
        return self._dict()

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunSpec:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown run settings {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        if d.get("depth", "all") != "all":
            d["depth"] = int(d["depth"])
        if "lr" in d:
            d["lr"] = float(d["lr"])
        if d.get("backbone_dropout") is not None:
            d["backbone_dropout"] = float(d["backbone_dropout"])
        return cls(**d)

    def cli_args(self) -> list[str]:
        """`fpt train` arguments that rebuild exactly this spec."""
        args = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in LATER_SETTINGS and v == _DEFAULTS[f.name]:
                continue
            flag = "--" + f.name.replace("_", "-")
            if f.name == "options":
                args += [
                    a
                    for k, val in sorted(v.items())
                    for a in ("--option", f"{k}={json.dumps(val)}")
                ]
            elif f.name == "lr":
                args += [flag, fmt_lr(v)]
            else:
                args += [flag, str(v)]
        return args


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RunSpec) if f.name in LATER_SETTINGS}
