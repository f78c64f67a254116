"""Backbone modules: each family's transformer (or LSTM) body driven by `inputs_embeds`, and
an explicit map from parameter groups to its modules.

The map is the only place that knows a family's module names. Freezing (fpt.models.freezing)
works on groups, never on parameter-name substrings, and `Backbone.check_groups` proves that
every parameter of the backbone sits in exactly one group. Which family uses which class,
and its sizes, is the registry's business (fpt.models.families); building one is
fpt.models.build's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


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

    def _result(self, out, output_attentions: bool):
        """What every `forward` returns: the (B, T, width) hidden states, or (hidden states,
        attention maps per block) when `output_attentions`. `out` is the HF model's output (a
        ModelOutput) or, for a family without attention maps (ViT run block by block, the
        LSTM; their forwards refuse `output_attentions` first), the hidden states."""
        if isinstance(out, torch.Tensor):
            if output_attentions:
                raise ValueError(f"the {self.family} backbone has no attention maps")
            return out
        hidden = out.last_hidden_state
        return (hidden, out.attentions) if output_attentions else hidden

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
        return self._result(out, output_attentions)


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
        return self._result(out, output_attentions)


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
        return self._result(self.model.layernorm(h), output_attentions)


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
        return self._result(out, output_attentions)


class LongformerBackbone(BertBackbone):
    """Longformer (RoBERTa layout; its attention holds extra query/key/value projections for
    global attention, all in `attn`). Sliding-window attention needs the sequence length to be
    a multiple of the window (512 for longformer-base-4096); `forward` pads with masked pad
    tokens, as LongformerModel does. For short sequences (T - 1 <= window / 2, e.g. Bit XOR's 10 tokens or
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
        """LongformerModel's forward for local attention only, written out: its encoder asks
        the mask whether any token attends globally (`.item()`, a device-to-host sync on every
        forward, which vmap cannot trace: fpt.fused), and its mask set-up assigns through a
        boolean index (another sync). Without global tokens the answer is known: no. The
        rest is LongformerModel's own steps, in its order (the same dropout draws):
        tests/test_fused_families.py checks it against LongformerModel bit for bit."""
        windows = self.window_for(embeds.shape[1])
        self._set_windows(windows)
        model, (b, t) = self.model, embeds.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones((b, t), dtype=torch.long, device=embeds.device)
        token_types = torch.zeros((b, t), dtype=torch.long, device=embeds.device)
        # pad to a multiple of the window with the pad token's embedding, masked
        w = max(windows)
        pad = (w - t % w) % w
        if pad:
            pad_ids = embeds.new_full((b, pad), model.config.pad_token_id, dtype=torch.long)
            embeds = torch.cat([embeds, model.embeddings(pad_ids)], dim=-2)
            attention_mask = nn.functional.pad(attention_mask, (0, pad), value=0)
            token_types = nn.functional.pad(token_types, (0, pad), value=0)
        h = model.embeddings(token_type_ids=token_types, inputs_embeds=embeds)
        masked = attention_mask == 0
        # the additive mask the layers expect: 0 attends, the dtype's minimum does not
        additive = torch.zeros(masked.shape, dtype=h.dtype, device=h.device).masked_fill(
            masked, torch.finfo(h.dtype).min
        )
        no_global = torch.zeros_like(masked)
        maps = []
        for layer in model.encoder.layer:
            out = layer(
                h,
                attention_mask=additive,
                is_index_masked=masked,
                is_index_global_attn=no_global,
                is_global_attn=False,
                output_attentions=output_attentions,
            )
            h = out[0]
            if output_attentions:  # (B, T, heads, window + 1) -> (B, heads, T, window + 1)
                maps.append(out[1].transpose(1, 2)[:, :, :t])
        h = h[:, :t]
        return (h, tuple(maps)) if output_attentions else h


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
        return self._result(self.model(embeds), output_attentions)
