"""Every backbone family (tiny sizes): trainable counts per preset computed from the shipped
config alone, offline random and from_pretrained builds, stats init, depth, per-layer
unfreezing, the Longformer window, and `fpt describe`."""

import json
import subprocess
import sys

import pytest
import torch

from fpt.models import PRESETS, build_model
from fpt.models.build import build_backbone
from fpt.models.families import CONFIG_DIR, FAMILIES, family, size_info
from fpt.models.init import stats_init_
from fpt.tasks import make_task

TINY = [name for name, fam in FAMILIES.items() if "tiny" in fam.sizes]


def _cfg(backbone, size="tiny"):
    return json.loads((CONFIG_DIR / family(backbone).sizes[size].config).read_text())


def _dims(backbone, size="tiny"):
    """Per-group parameter counts from the architecture config (no model, no group map)."""
    c = _cfg(backbone, size)
    if backbone == "gpt2":
        d, L, P = c["n_embd"], c["n_layer"], c["n_positions"]
        ff = c.get("n_inner") or 4 * d
        return (
            d,
            L,
            {
                "pos": P * d,
                "ln": (2 * L + 1) * 2 * d,
                "attn": L * (d * 3 * d + 3 * d + d * d + d),
                "ff": L * (d * ff + ff + ff * d + d),
            },
        )
    if backbone == "t5":
        d, L, H = c["d_model"], c["num_layers"], c["num_heads"]
        inner, ff = H * c["d_kv"], c["d_ff"]
        return (
            d,
            L,
            {
                "pos": c["relative_attention_num_buckets"] * H,  # block 0's relative bias
                "ln": (2 * L + 1) * d,  # RMS norms: scale only
                "attn": L * (3 * d * inner + inner * d),  # no biases
                "ff": L * (d * ff + ff * d),
            },
        )
    if backbone == "lstm":
        d, L = c["hidden_size"], c["num_layers"]
        return (
            d,
            L,
            {
                "pos": c["max_positions"] * d if c["positions"] else 0,
                # the reference cell (the default): per layer two 4d-wide pre-activation
                # norms and the cell-state norm, alpha and beta each; no final norm
                "ln": L * (2 * 2 * 4 * d + 2 * d),
                "attn": L * 2 * (4 * d * d + 4 * d),  # i2h and h2h with biases
                "ff": 0,
            },
        )
    d, L, ff = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    linear = d * d + d
    dims = {
        "ln": (2 * L + 1) * 2 * d,
        "attn": L * 4 * linear,
        "ff": L * (d * ff + ff + ff * d + d),
    }
    if backbone == "vit":
        dims["ln"] = (2 * L + 1) * 2 * d  # 2 per block + final
        dims["pos"] = 1024 * d  # the new position table
    else:  # bert, minilm, longformer: position + token-type tables, embedding LayerNorm
        dims["pos"] = (c["max_position_embeddings"] + c["type_vocab_size"]) * d
    if backbone == "longformer":
        dims["attn"] = L * 7 * linear  # + global query/key/value projections
    return d, L, dims


def _expected(backbone, preset, task):
    d, L, g = _dims(backbone)
    inp = task.input.dim * d + d
    out = (d + 1) * task.head.outputs_per_token * task.head.n_classes
    fpt = inp + out + g["ln"] + g["pos"]
    return {
        "output_only": out,
        "output_ln": out + g["ln"],
        "output_ln_in": out + g["ln"] + inp,
        "output_ln_in_pos": fpt,
        "fpt": fpt,
        "in_out": inp + out + g["pos"],
        "fpt_ff": fpt + g["ff"],
        "fpt_attn": fpt + g["attn"],
        "fpt_ff_attn": fpt + g["attn"] + g["ff"],
        "fpt_ff_last_attn": fpt + g["ff"] + g["attn"] // L,
        "full": fpt + g["attn"] + g["ff"],
    }[preset]


@pytest.fixture(scope="module")
def task():
    return make_task("bit_memory", "cpu", {"n_bits": 20, "patch": 5})


@pytest.mark.parametrize("backbone", TINY)
def test_trainable_counts_for_every_preset(backbone, task):
    torch.manual_seed(0)
    bb = build_backbone(backbone, "tiny", "random")
    bb.check_groups()
    for preset in PRESETS:
        model = build_model(task, backbone, "tiny", "random", preset)
        got = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert got == _expected(backbone, preset, task), preset


@pytest.mark.parametrize("backbone", TINY)
def test_last_attention_unfreezing_touches_exactly_the_last_block(backbone, task):
    base = build_model(task, backbone, "tiny", "random", "fpt_ff")
    last = build_model(task, backbone, "tiny", "random", "fpt_ff_last_attn")
    blocks = {m: n for n, m in last.named_modules()}
    prefixes = [blocks[b] + "." for b in last.backbone.blocks()]
    trainable = {n for n, p in last.named_parameters() if p.requires_grad}
    added = trainable - {n for n, p in base.named_parameters() if p.requires_grad}
    assert added and all(n.startswith(prefixes[-1]) for n in added)


def test_output_only_freezes_the_input_layer_too(task):
    """The reservoir preset: a frozen random input layer feeding a frozen backbone."""
    model = build_model(task, "gpt2", "tiny", "random", "output_only")
    assert not any(p.requires_grad for p in model.input_layer.parameters())
    assert all(p.requires_grad for p in model.output_layer.parameters())


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A weights dir with a tiny model of every family saved with save_pretrained."""
    d = tmp_path_factory.mktemp("family_weights")
    for name in TINY:
        torch.manual_seed(7)
        build_backbone(name, "tiny", "random").model.save_pretrained(
            d / size_info(name, "tiny").local_name
        )
    return d


@pytest.mark.parametrize("backbone", TINY)
def test_from_pretrained_stats_and_depth(backbone, weights):
    torch.manual_seed(7)
    ref = build_backbone(backbone, "tiny", "random")
    pre = build_backbone(backbone, "tiny", "pretrained", weights_dir=weights)
    ref_sd, pre_sd = ref.state_dict(), pre.state_dict()
    assert set(ref_sd) == set(pre_sd)
    assert all(torch.equal(ref_sd[k], pre_sd[k]) for k in ref_sd)

    # depth: the first block survives unchanged, the rest are gone
    cut = build_backbone(backbone, "tiny", "pretrained", depth=1, weights_dir=weights)
    cut.check_groups()
    assert cut.n_layers == 1 and pre.n_layers == 2
    for (n1, p1), (n2, p2) in zip(
        cut.blocks()[0].named_parameters(), pre.blocks()[0].named_parameters(), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)
    x = torch.randn(2, 6, cut.width)
    with torch.no_grad():
        assert cut.eval()(x).shape == (2, 6, cut.width)

    # stats: each tensor redrawn with its own mean and std
    torch.manual_seed(3)
    st = build_backbone(backbone, "tiny", "stats", weights_dir=weights)
    src = dict(pre.model.named_parameters())
    for name, p in st.model.named_parameters():
        s = src[name].detach().float()
        if s.numel() < 1000 or s.std() == 0:
            continue
        assert not torch.equal(p, src[name]), name
        assert p.float().mean().item() == pytest.approx(s.mean().item(), abs=0.1 * s.std().item())
        assert p.float().std().item() == pytest.approx(s.std().item(), rel=0.1)


def test_stats_init_matches_each_tensor_exactly_in_expectation():
    torch.manual_seed(0)
    m = torch.nn.Linear(200, 300)
    with torch.no_grad():
        m.weight.mul_(3).add_(0.5)
    mean, std = m.weight.mean().item(), m.weight.std().item()
    used = stats_init_(m)
    assert used["weight"] == pytest.approx((mean, std))
    assert m.weight.mean().item() == pytest.approx(mean, abs=0.02)
    assert m.weight.std().item() == pytest.approx(std, rel=0.02)


def test_longformer_short_sequences_use_a_smaller_exact_window():
    torch.manual_seed(0)
    bb = build_backbone("longformer", "tiny", "random").eval()
    assert bb.window_for(4) == [6, 6] and bb.window_for(20) == [8, 8]
    x = torch.randn(2, 4, bb.width)
    with torch.no_grad():
        short = bb(x)
        bb.window_for = lambda n: list(bb._windows)  # the configured window, padded to 8
        full = bb(x)
    assert torch.allclose(short, full, atol=1e-5)


def test_vit_uses_a_new_zero_position_table_and_not_its_own_embeddings():
    bb = build_backbone("vit", "tiny", "random")
    assert bb.max_positions == 1024 and torch.count_nonzero(bb.pos_embed.weight) == 0
    assert bb.model.embeddings in bb.groups().unused


def test_describe_agrees_for_a_new_family():
    out = subprocess.run(
        [sys.executable, "-m", "fpt", "describe", "--task", "bit_xor", "--backbone", "t5"]
        + ["--size", "tiny", "--init", "random", "--trainable", "fpt"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    assert info["trainable_params"] == _expected("t5", "fpt", make_task("bit_xor"))
    # 10 tokens: relative positions -9..9 reach T5's buckets 0..8 and 17..24 (17 of 32)
    assert info["groups"]["pos"] == {"total": 32 * 4, "trainable": 32 * 4, "reachable": 17 * 4}
    assert info["groups"]["attn"]["trainable"] == 0
