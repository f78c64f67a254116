"""Trainable-parameter counts per preset per family, computed from the architecture config
alone (independently of the group maps and the freezing code)."""

import json
import subprocess
import sys

import pytest
import torch

from fpt.models import build_model
from fpt.models.families import CONFIG_DIR, family
from fpt.tasks import make_task


def _dims(backbone, size):
    cfg = json.loads((CONFIG_DIR / family(backbone).sizes[size].config).read_text())
    if backbone == "gpt2":
        d, L, P = cfg["n_embd"], cfg["n_layer"], cfg["n_positions"]
        ff = cfg.get("n_inner") or 4 * d
        return {
            "pos": P * d,
            "ln": (2 * L + 1) * 2 * d,  # ln_1, ln_2 per block + ln_f
            "attn": L * (d * 3 * d + 3 * d + d * d + d),
            "ff": L * (d * ff + ff + ff * d + d),
        }
    d, L, P, ff = (
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["max_position_embeddings"],
        cfg["intermediate_size"],
    )
    return {
        "pos": P * d + cfg["type_vocab_size"] * d,  # position + token-type tables
        "ln": (2 * L + 1) * 2 * d,  # 2 per block + the embedding LayerNorm
        "attn": L * (4 * (d * d + d)),
        "ff": L * (d * ff + ff + ff * d + d),
    }


def _expected(backbone, size, preset, task):
    dims = _dims(backbone, size)
    d = json.loads((CONFIG_DIR / family(backbone).sizes[size].config).read_text())
    width = d.get("n_embd") or d["hidden_size"]
    n_layers = d.get("n_layer") or d["num_hidden_layers"]
    inp = task.input.dim * width + width
    out = (
        width * task.head.outputs_per_token * task.head.n_classes
        + task.head.outputs_per_token * task.head.n_classes
    )
    fpt = inp + out + dims["ln"] + dims["pos"]
    per_attn, per_ff = dims["attn"] // n_layers, dims["ff"] // n_layers
    return {
        "output_only": out,
        "output_ln": out + dims["ln"],
        "output_ln_in": out + dims["ln"] + inp,
        "output_ln_in_pos": fpt,
        "fpt": fpt,
        "in_out": inp + out + dims["pos"],
        "fpt_ff": fpt + dims["ff"],
        "fpt_attn": fpt + dims["attn"],
        "fpt_ff_attn": fpt + dims["attn"] + dims["ff"],
        "fpt_ff_last_attn": fpt + dims["ff"] + per_attn,
        "full": fpt + dims["attn"] + dims["ff"],
    }[preset], per_ff


PRESET_NAMES = [
    "output_only",
    "output_ln",
    "output_ln_in",
    "output_ln_in_pos",
    "fpt",
    "in_out",
    "fpt_ff",
    "fpt_attn",
    "fpt_ff_attn",
    "fpt_ff_last_attn",
    "full",
]


@pytest.mark.parametrize(
    "backbone,size", [("gpt2", "tiny"), ("gpt2", "small"), ("minilm", "tiny"), ("minilm", "l6")]
)
@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_trainable_counts_match_independent_computation(backbone, size, preset):
    task = make_task("bit_memory")
    torch.manual_seed(0)
    model = build_model(task, backbone, size, "random", preset)
    model.backbone.check_groups()
    got = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert got == _expected(backbone, size, preset, task)[0]


def test_last_attention_unfreezing_touches_only_the_last_block():
    task = make_task("bit_xor")
    model = build_model(task, "gpt2", "tiny", "random", "fpt_ff_last_attn")
    blocks = model.backbone.model.h
    assert all(p.requires_grad for p in blocks[-1].attn.parameters())
    assert not any(p.requires_grad for blk in blocks[:-1] for p in blk.attn.parameters())
    assert all(p.requires_grad for blk in blocks for p in blk.mlp.parameters())
    assert not model.backbone.model.wte.weight.requires_grad  # unused token table stays frozen


def test_describe_cli_agrees_with_the_model():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpt",
            "describe",
            "--task",
            "bit_xor",
            "--backbone",
            "minilm",
            "--size",
            "tiny",
            "--init",
            "random",
            "--trainable",
            "fpt",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    expected, _ = _expected("minilm", "tiny", "fpt", make_task("bit_xor"))
    assert info["trainable_params"] == expected
    assert info["groups"]["attn"]["trainable"] == 0 and info["groups"]["attn"]["total"] > 0
    assert info["task_shape"]["tokens"] == 10


# ---- the group maps at the sizes the paper uses -------------------------------------------
#
# Built once each from the shipped configs with init random on the meta device (shapes, no
# storage: a GPT-2 large costs nothing), then frozen per preset. The expected counts are
# written out from the published architectures (the literals below), not read from the
# configs, so a changed config or group map fails here.
#
# The task is Bit Memory: input Linear(50 -> d) = 50 d + d; output Linear(d -> 50 x 2)
# = 100 d + 100. Presets: output_ln = out + ln; fpt = in + out + ln + pos;
# full = fpt + attn + ff (everything but the unused token tables / ViT's own embeddings).


def _lin(n_in, n_out, bias=True):
    return n_in * n_out + (n_out if bias else 0)


def _gpt2(d, L, P=1024, V=50257):
    return {
        "pos": P * d,  # wpe
        "ln": (2 * L + 1) * 2 * d,  # ln_1, ln_2 per block + ln_f, weight and bias
        "attn": L * (_lin(d, 3 * d) + _lin(d, d)),  # c_attn (q, k, v) + c_proj
        "ff": L * (_lin(d, 4 * d) + _lin(4 * d, d)),  # c_fc + c_proj, inner 4d
        "unused": V * d,  # wte
    }


def _bert_like(d, L, P, types, V, ff, attn_linears):
    return {
        "pos": P * d + types * d,  # position + token-type tables
        "ln": (2 * L + 1) * 2 * d,  # embedding LN + attention-output and output LN per block
        "attn": L * attn_linears * _lin(d, d),  # q, k, v, (3 global,) output dense
        "ff": L * (_lin(d, ff) + _lin(ff, d)),  # intermediate + output dense
        "unused": V * d,  # word embeddings
    }


def _t5(d, L, d_ff, heads, d_kv, buckets, V):
    return {
        "pos": buckets * heads,  # block 0's relative attention bias
        "ln": (2 * L + 1) * d,  # RMS norms: a scale, no bias; 2 per block + final
        "attn": L * 4 * _lin(d, heads * d_kv, bias=False),  # q, k, v, o (o: inner -> d)
        "ff": L * (_lin(d, d_ff, bias=False) + _lin(d_ff, d, bias=False)),  # wi, wo
        "unused": V * d,  # shared token table (encoder.embed_tokens is tied to it)
    }


def _vit(d, L, ff, image, patch, channels, new_positions=1024):
    n_patches = (image // patch) ** 2
    return {
        "pos": new_positions * d,  # fpt's new zero-initialised table
        "ln": (2 * L + 1) * 2 * d,  # layernorm_before/after per block + final layernorm
        "attn": L * 4 * _lin(d, d),  # q, k, v, o (qkv_bias)
        "ff": L * (_lin(d, ff) + _lin(ff, d)),  # fc1 + fc2
        # ViT's own embeddings: class token, its 197-row table, the patch projection (conv)
        "unused": d + (n_patches + 1) * d + channels * patch * patch * d + d,
    }


def _lstm(d, L, positions, cell, P=1024):
    recurrence = L * (_lin(d, 4 * d) + _lin(d, 4 * d))  # 4 gates from input and from h
    if cell == "fused":
        ln = (L + 1) * 2 * d  # a pre-norm per layer + the final norm, weight and bias
    else:  # reference: in-cell norms of i2h (4d), h2h (4d) and the cell state (d), no final
        ln = L * (2 * 4 * d + 2 * 4 * d + 2 * d)
    return {"pos": P * d if positions else 0, "ln": ln, "attn": recurrence, "ff": 0, "unused": 0}


PAPER_SIZES = {
    ("gpt2", "small"): _gpt2(768, 12),
    ("gpt2", "medium"): _gpt2(1024, 24),
    ("gpt2", "large"): _gpt2(1280, 36),
    ("bert", "base"): _bert_like(768, 12, P=512, types=2, V=30522, ff=3072, attn_linears=4),
    ("longformer", "base"): _bert_like(768, 12, P=4098, types=1, V=50265, ff=3072, attn_linears=7),
    ("t5", "base"): _t5(768, 12, d_ff=3072, heads=12, d_kv=64, buckets=32, V=32128),
    ("vit", "base"): _vit(768, 12, ff=3072, image=224, patch=16, channels=3),
}
WIDTH = {("gpt2", "medium"): 1024, ("gpt2", "large"): 1280, ("lstm", "tiny"): 64}
LSTM_SIZES = {  # size: (layers, learned positions); residual connections add no parameters
    "l3": (3, False),
    "l3_res": (3, False),
    "l3_pos": (3, True),
    "l12": (12, False),
    "l12_res": (12, False),
    "l12_res_pos": (12, True),
    "tiny": (2, True),
}
for _size, (_layers, _pos) in LSTM_SIZES.items():
    for _cell in ("reference", "fused"):
        PAPER_SIZES[("lstm", _size, _cell)] = _lstm(
            WIDTH.get(("lstm", _size), 768), _layers, _pos, _cell
        )


def _preset_counts(dims, d):
    inp, out = _lin(50, d), _lin(d, 100)
    fpt = inp + out + dims["ln"] + dims["pos"]
    return {
        "output_ln": out + dims["ln"],
        "fpt": fpt,
        "full": fpt + dims["attn"] + dims["ff"],
        "total": fpt + dims["attn"] + dims["ff"] + dims["unused"],
    }


@pytest.mark.parametrize("key", list(PAPER_SIZES), ids=lambda k: "-".join(k))
def test_group_maps_at_paper_sizes_give_the_hand_computed_counts(key):
    backbone, size, *cell = key
    task = make_task("bit_memory")
    settings = {"lstm_cell": cell[0]} if cell else {}
    with torch.device("meta"):
        model = build_model(task, backbone, size, "random", "fpt", **settings)
    assert next(model.parameters()).is_meta  # nothing allocated
    if cell:
        assert model.backbone.model.config.cell == cell[0]
    model.backbone.check_groups()
    expected = _preset_counts(PAPER_SIZES[key], WIDTH.get((backbone, size), 768))
    got = {}
    for preset in ("output_ln", "fpt", "full"):
        model.freeze(preset)
        got[preset] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    got["total"] = sum(p.numel() for p in model.parameters())
    assert got == expected


def test_paper_size_totals_match_the_published_model_sizes():
    """Anchors for the formulas above: GPT-2 small's GPT2Model has 124,439,808 parameters
    and BERT base without its pooler 108,891,648 (110M less the 768 x 768 + 768 pooler)."""
    g = PAPER_SIZES[("gpt2", "small")]
    assert g["pos"] + g["ln"] + g["attn"] + g["ff"] + g["unused"] == 124_439_808
    b = PAPER_SIZES[("bert", "base")]
    assert b["pos"] + b["ln"] + b["attn"] + b["ff"] + b["unused"] == 108_891_648
