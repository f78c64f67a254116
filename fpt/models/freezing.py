"""Freezing presets: which parameter groups train.

Groups: `input` and `output` (the new layers), and the backbone's `pos`, `ln`, `attn`, `ff`
(see ParamGroups). A preset is a set of (group, blocks) choices, resolved against the
backbone's explicit module map, never against parameter names.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fpt.models.backbones import Backbone

ALL = "all"
LAST = "last"


@dataclass(frozen=True)
class Preset:
    """`groups`: the always-whole groups that train; `attn`/`ff`: which blocks' attention and
    feed-forward train (None, "all" or "last")."""

    groups: frozenset[str]
    attn: str | None = None
    ff: str | None = None
    doc: str = ""


_FPT = frozenset({"input", "output", "ln", "pos"})

PRESETS: dict[str, Preset] = {
    "output_only": Preset(frozenset({"output"}), doc="output layer only (reservoir-style)"),
    "output_ln": Preset(frozenset({"output", "ln"}), doc="+ layer norms"),
    "output_ln_in": Preset(frozenset({"output", "ln", "input"}), doc="+ input layer"),
    "output_ln_in_pos": Preset(_FPT, doc="+ positions (= fpt)"),
    "fpt": Preset(_FPT, doc="input, output, layer norms, positions (the paper's FPT)"),
    "in_out": Preset(frozenset({"input", "output", "pos"}), doc="fpt with layer norms frozen"),
    "fpt_ff": Preset(_FPT, ff=ALL, doc="fpt + every feed-forward block"),
    "fpt_attn": Preset(_FPT, attn=ALL, doc="fpt + every attention block"),
    "fpt_ff_attn": Preset(_FPT, attn=ALL, ff=ALL, doc="fpt + feed-forward + attention"),
    "fpt_ff_last_attn": Preset(
        _FPT, attn=LAST, ff=ALL, doc="fpt + feed-forward + the last block's attention"
    ),
    "full": Preset(_FPT, attn=ALL, ff=ALL, doc="everything trains"),
}

# The paper's successive unfreezing (Table 10, the ladder figure): each preset trains what the
# one before it trains plus one group; preset -> what that step adds.
LADDER: dict[str, str] = {
    "output_only": "output only",
    "output_ln": "+ layer norms",
    "output_ln_in": "+ input",
    "fpt": "+ positions (FPT)",
}


def _blocks(per_block: list[list[nn.Module]], which: str | None) -> list[nn.Module]:
    if which is None:
        return []
    chosen = per_block if which == ALL else per_block[-1:]
    return [m for blk in chosen for m in blk]


def trainable_modules(
    preset: str, backbone: Backbone, input_layer: nn.Module, output_layer: nn.Module
) -> list[nn.Module]:
    """The modules whose parameters train under `preset`."""
    if preset not in PRESETS:
        raise ValueError(
            f"unknown trainable preset {preset!r}; known presets: {', '.join(PRESETS)}"
        )
    p, g = PRESETS[preset], backbone.groups()
    named = {"input": [input_layer], "output": [output_layer], "pos": g.pos, "ln": g.ln}
    mods = [m for name in sorted(p.groups) for m in named[name]]
    return mods + _blocks(g.attn, p.attn) + _blocks(g.ff, p.ff)


def apply_preset(
    model: nn.Module,
    preset: str,
    backbone: Backbone,
    input_layer: nn.Module,
    output_layer: nn.Module,
) -> None:
    """Freeze everything in `model`, then unfreeze the preset's modules."""
    model.requires_grad_(False)
    for m in trainable_modules(preset, backbone, input_layer, output_layer):
        m.requires_grad_(True)
