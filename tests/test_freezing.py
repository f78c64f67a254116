"""Trainable-parameter counts per preset per family, computed from the architecture config
alone (independently of the group maps and the freezing code)."""

import json
import subprocess
import sys

import pytest
import torch

from fpt.models import build_model
from fpt.models.backbones import CONFIG_DIR, family
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
