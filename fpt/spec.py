"""RunSpec: everything that defines one training run, its hive-style path and its CLI form.

Grid axes appear in the run path as `axis=value` folders so pandas/pyarrow read them as
columns; the remaining settings (steps, batch sizes, eval cadence, task options) are hashed
into the last folder, so a changed hyperparameter is a different run and never reuses
stale results or checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

AXES = ("task", "backbone", "size", "init", "trainable", "depth", "input_init", "lr", "seed")

# Settings added after runs already existed, with the value that means "as before". At that
# value they are left out of the settings hash, the JSON form and the CLI, so adding one
# never renames, retrains or restarts (checkpoint spec check) an existing run.
OPTIONAL_SETTINGS: dict[str, Any] = {"patience": 0}


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
    micro_batch_size: int = 16
    eval_every: int = 100
    eval_batch_size: int = 256
    ckpt_every: int = 500
    options: dict[str, Any] = field(default_factory=dict)
    # Early stopping: end the run after this many evaluations without a new best validation
    # accuracy and restore the best weights (fpt.train); 0 = off (the paper's protocol).
    patience: int = 0

    def _dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if OPTIONAL_SETTINGS.get(k, object()) != v}

    def settings(self) -> dict[str, Any]:
        """The non-axis settings that define the run (hashed into its path)."""
        d = self._dict()
        return {k: d[k] for k in d if k not in AXES}

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
        return cls(**d)

    def cli_args(self) -> list[str]:
        """`fpt train` arguments that rebuild exactly this spec."""
        args = []
        for f in fields(self):
            v = getattr(self, f.name)
            if OPTIONAL_SETTINGS.get(f.name, object()) == v:
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
