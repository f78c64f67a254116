"""Which trainable parameters can receive a gradient, and how the paper counted parameters.

Reachable parameters. A trainable parameter that the forward pass never reads gets no
gradient: with `n_tokens` tokens (`model.input_spec.n_tokens`, the most a task feeds), only n
rows of a learned position table are indexed, whatever the table's size. `UNREACHABLE` is an
explicit per-family map, family name (`Backbone.family`) -> function of (backbone, n_tokens)
giving, per module, how many of its elements are never indexed; it names modules through the
same attributes as the family's group map (fpt.models.backbones), never by matching
parameter names:

| family      | module                                   | rows indexed                        |
|-------------|------------------------------------------|-------------------------------------|
| gpt2        | `wpe` (n_positions rows)                 | 0 .. n-1                            |
| bert/minilm | `position_embeddings`                    | 0 .. n-1                            |
|             | `token_type_embeddings`                  | 0 only (every token is type 0)      |
| longformer  | `position_embeddings` (RoBERTa ids start | pad_id+1 .. pad_id+n (the padding   |
|             | after the padding index)                 | row never trains); tokens as BERT   |
| vit         | the new 1024-row table `pos_embed`       | 0 .. n-1                            |
| lstm        | the optional table `wpe`                 | 0 .. n-1                            |
| t5          | block 0's `relative_attention_bias`      | the buckets T5's own bucket function|
|             | (buckets x heads)                        | gives relative positions -(n-1)..n-1|

Longformer pads a sequence to a multiple of its attention window itself; the padded tokens
take further position rows but are masked, so those rows get an exactly zero gradient and
count as unreachable. `fpt.models.fpt.count_params` subtracts these counts (for trainable
modules) to give `reachable` per group and overall.

The paper's count. Its model-size table gives about 106K / 190K / 300K trainable parameters
for FPT on CIFAR-10 with GPT-2 small / medium / large (`PAPER_CIFAR10_FPT_PARAMS`). fpt
counts 870,154 for small: 48-feature tokens (the code's 4x4x3 patches) and all 1,024
position rows. Candidate rules, each computed from the built models (fpt preset, CIFAR-10's
64 tokens; "io biases" = the input and output layers' biases; worst relative error over the
three sizes):

| tokens | position rows | final LN | io biases | LN biases | small   | medium    | large     | worst |
|--------|---------------|----------|-----------|-----------|---------|-----------|-----------|-------|
| 64x48  | all 1024      | in       | in        | in        | 870,154 | 1,209,354 | 1,573,130 | 721%  |
| 64x16  | all 1024      | in       | in        | in        | 845,578 | 1,176,586 | 1,532,170 | 698%  |
| 64x16  | all 1024      | out      | out       | out       | 824,832 | 1,124,352 | 1,436,160 | 678%  |
| 64x48  | used 64       | in       | in        | in        | 132,874 |   226,314 |   344,330 | 25.4% |
| 64x48  | used 64       | out      | out       | in        | 130,560 |   223,232 |   340,480 | 23.2% |
| 64x48  | used 64       | in       | in        | out       | 113,674 |   176,138 |   250,890 | 16.4% |
| 64x16  | used 64       | in       | in        | out       |  89,098 |   143,370 |   209,930 | 30.0% |
| 64x16  | used 64       | out      | out       | out       |  87,552 |   141,312 |   207,360 | 30.9% |
| 64x16  | used 64       | in       | in        | in        | 108,298 |   193,546 |   303,370 | 2.17% |
| 64x16  | used 64       | in       | out       | in        | 107,520 |   192,512 |   302,080 | 1.43% |
| 64x16  | used 64       | out      | in        | in        | 106,762 |   191,498 |   300,810 | 0.79% |
| 64x16  | used 64       | out      | out       | in        | 105,984 |   190,464 |   299,520 | 0.24% |

(All 32 combinations of these five choices were computed; the 20 not shown are all 16.8% or
more off.)

Only 16-feature tokens (the paper's text: 64 x 16, i.e. grayscale 4x4 patches) with the 64
used position rows come near; the best fit, and the only one whose three totals round to the
three published numbers, leaves out the final layer norm and the input and output layers'
biases: d * (16 + 10 + 4 L + 64) = 768 * 138, 1024 * 186, 1280 * 234. That is `PAPER_RULE`
(`paper_count`), applied to the task under the paper's token setting (`PAPER_TASK_OPTIONS`:
CIFAR-10 counted with `patch_channels: gray`; other tasks with their own options, the paper
publishing no count for them). Final layer norm per family: `FINAL_NORM`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fpt.models.backbones import Backbone

# The paper's model-size table: FPT on CIFAR-10, trainable parameters per GPT-2 size.
PAPER_CIFAR10_FPT_PARAMS = {"small": 106_000, "medium": 190_000, "large": 300_000}

PAPER_RULE = (
    "trainable parameters that get a gradient, without the input and output layers' biases "
    "and without the final layer norm, with CIFAR-10 in 16-feature (grayscale 4x4) tokens"
)

# Options that give the paper's token setting, per task (what its parameter counts used).
PAPER_TASK_OPTIONS: dict[str, dict[str, Any]] = {"cifar10": {"patch_channels": "gray"}}


def paper_options(task: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """`options` with the paper's token setting for `task` on top."""
    return {**(options or {}), **PAPER_TASK_OPTIONS.get(task, {})}


Unreachable = list[tuple[nn.Module, int]]


def _table(emb: nn.Embedding, first: int, n: int, family: str) -> tuple[nn.Module, int]:
    """Rows first .. first+n-1 of `emb` are indexed: the rest, in elements."""
    if first + n > emb.num_embeddings:
        raise ValueError(
            f"{n} tokens need position rows {first}..{first + n - 1}, but the {family} table "
            f"has {emb.num_embeddings}"
        )
    return emb, (emb.num_embeddings - n) * emb.embedding_dim


def _gpt2(bb: Backbone, n: int) -> Unreachable:
    return [_table(bb.model.wpe, 0, n, "gpt2")]


def _bert(bb: Backbone, n: int) -> Unreachable:
    emb = bb.model.embeddings
    return [
        _table(emb.position_embeddings, 0, n, "bert"),
        _table(emb.token_type_embeddings, 0, 1, "bert"),
    ]


def _longformer(bb: Backbone, n: int) -> Unreachable:
    emb = bb.model.embeddings
    first = bb.model.config.pad_token_id + 1
    return [
        _table(emb.position_embeddings, first, n, "longformer"),
        _table(emb.token_type_embeddings, 0, 1, "longformer"),
    ]


def _vit(bb: Backbone, n: int) -> Unreachable:
    return [_table(bb.pos_embed, 0, n, "vit")]


def _lstm(bb: Backbone, n: int) -> Unreachable:
    wpe = bb.model.wpe
    return [] if wpe is None else [_table(wpe, 0, n, "lstm")]


def t5_buckets_reached(attn: nn.Module, n: int) -> int:
    """How many relative-position buckets T5's own bucket function gives for the relative
    positions -(n-1) .. n-1 (every query/key offset of an n-token encoder sequence)."""
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-(n - 1), n, device="cpu")
    buckets = T5Attention._relative_position_bucket(
        rel,
        bidirectional=not attn.is_decoder,
        num_buckets=attn.relative_attention_num_buckets,
        max_distance=attn.relative_attention_max_distance,
    )
    return int(buckets.unique().numel())


def _t5(bb: Backbone, n: int) -> Unreachable:
    attn = bb.model.encoder.block[0].layer[0].SelfAttention
    table = attn.relative_attention_bias  # (num_buckets, n_heads)
    unused = table.num_embeddings - t5_buckets_reached(attn, n)
    return [(table, unused * table.embedding_dim)]


UNREACHABLE: dict[str, Callable[[Backbone, int], Unreachable]] = {
    "gpt2": _gpt2,
    "bert": _bert,  # bert and minilm (BertBackbone)
    "longformer": _longformer,
    "vit": _vit,
    "t5": _t5,
    "lstm": _lstm,
}

# The norm after the last block, per family (None: the family has none: BERT-style post-LN
# blocks end in their own norm; the reference LSTM cell has no final norm).
FINAL_NORM: dict[str, Callable[[Backbone], nn.Module | None]] = {
    "gpt2": lambda bb: bb.model.ln_f,
    "bert": lambda bb: None,
    "longformer": lambda bb: None,
    "vit": lambda bb: bb.model.layernorm,
    "t5": lambda bb: bb.model.encoder.final_layer_norm,
    "lstm": lambda bb: bb.model.ln_f,
}


def _of(table: dict, bb: Backbone, what: str):
    if bb.family not in table:
        raise KeyError(f"fpt.models.reach has no {what} for the {bb.family} family: add it")
    return table[bb.family]


def unreachable(bb: Backbone, n_tokens: int) -> Unreachable:
    """(module, elements that no forward pass over n_tokens tokens indexes) per module."""
    return _of(UNREACHABLE, bb, "unreachable-row map")(bb, n_tokens)


def final_norm(bb: Backbone) -> nn.Module | None:
    return _of(FINAL_NORM, bb, "final-norm map")(bb)


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def paper_count(model: nn.Module) -> int:
    """`PAPER_RULE` for an FPT model (build it with the paper's token setting,
    `paper_options`): its reachable trainable parameters, less the input and output layers'
    biases and the final layer norm."""
    bb = model.backbone
    left_out: list[nn.Module] = []
    norm = final_norm(bb)
    if norm is not None:
        left_out.append(norm)
    excluded = {id(p) for m in left_out for p in m.parameters()}
    for layer in (model.input_layer, model.output_layer):
        bias = layer.bias if isinstance(layer, nn.Linear) else None
        if bias is not None:
            excluded.add(id(bias))
    params = {id(p): p for p in model.parameters() if p.requires_grad and id(p) not in excluded}
    count = sum(p.numel() for p in params.values())
    for mod, n in unreachable(bb, model.input_spec.n_tokens):
        if _trains(mod):
            count -= n
    return count
