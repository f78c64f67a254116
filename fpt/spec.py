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


def _random_backbone(spec: RunSpec) -> bool:
    """A backbone drawn from an init scheme: random, or random before the Bit Memory load."""
    return spec.init in ("random", "bit_memory") and spec.backbone != "lstm"


# Settings that change only some runs. Where one does not apply it is reset to its default, so
# that a run has one spec, one path and one command line (random_init changes nothing for a
# pretrained backbone, lstm_cell nothing for a transformer).
APPLIES: dict[str, Callable[[RunSpec], bool]] = {
    "random_init": _random_backbone,
    "lstm_cell": lambda spec: spec.backbone == "lstm",
}


def applies(name: str, spec: RunSpec) -> bool:
    """Whether setting `name` changes run `spec` at all."""
    return name not in APPLIES or APPLIES[name](spec)


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
        for name, applies_to in APPLIES.items():
            if not applies_to(self):
                object.__setattr__(self, name, _DEFAULTS[name])

    def _dict(self) -> dict[str, Any]:
        return asdict(self)

    def settings(self) -> dict[str, Any]:
        """The non-axis settings that define the run (hashed into its path): every one that
        applies to it."""
        return {k: v for k, v in asdict(self).items() if k not in AXES and applies(k, self)}

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
            if v is None:  # backbone_dropout None: the family's own; the flag's default
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


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RunSpec) if f.name in APPLIES}
