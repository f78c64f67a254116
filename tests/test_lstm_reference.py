"""The paper's reference LN-LSTM cell (`LSTMConfig(cell="reference")`): its equations, layer
norm, init, dropout and random initial states, its parameter groups and presets, and the
fused cell left as it was."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from fpt.models.backbones import LSTMBackbone
from fpt.models.freezing import apply_preset
from fpt.models.lstm import (
    LSTM_SIZES,
    LayerNormLSTMCell,
    LSTMBlock,
    LSTMConfig,
    LSTMModel,
    ReferenceLayerNorm,
    ReferenceLSTMBlock,
)

CELLS = ("fused", "reference")


def _model(size: str, cell: str, **extra) -> LSTMModel:
    return LSTMModel(LSTMConfig(**{**LSTM_SIZES[size], "cell": cell, **extra}))


def _ln(x: torch.Tensor, norm: ReferenceLayerNorm) -> torch.Tensor:
    """Layer norm written out: unbiased variance, eps 1e-6 inside the sqrt, then alpha, beta."""
    n = x.shape[-1]
    mean = x.sum(-1, keepdim=True) / n
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / (n - 1)
    return norm.alpha * ((x - mean) / (var + 1e-6) ** 0.5) + norm.beta


def _by_hand(cell: LayerNormLSTMCell, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """The reference equations, step by step, without dropout."""
    n = cell.hidden_size
    outputs = []
    for t in range(x.shape[1]):
        i2h = x[:, t] @ cell.i2h.weight.T + cell.i2h.bias
        h2h = h @ cell.h2h.weight.T + cell.h2h.bias
        pre = _ln(i2h, cell.ln_i2h) + _ln(h2h, cell.ln_h2h)
        i = torch.sigmoid(pre[:, :n])
        f = torch.sigmoid(pre[:, n : 2 * n])
        o = torch.sigmoid(pre[:, 2 * n : 3 * n])
        g = torch.tanh(pre[:, 3 * n :])
        c = _ln(c * f + i * g, cell.ln_cell)
        h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs, 1), (h, c)


def test_reference_cell_matches_the_equations_step_by_step():
    torch.manual_seed(0)
    cell = LayerNormLSTMCell(8, 8, dropout=0.0)
    x, h0, c0 = torch.randn(2, 3, 8), torch.randn(2, 8), torch.randn(2, 8)
    y, (h, c) = cell(x, (h0, c0))
    want_y, (want_h, want_c) = _by_hand(cell, x, h0, c0)
    assert y.shape == (2, 3, 8)
    assert_close(y, want_y)
    assert_close(h, want_h)
    assert_close(c, want_c)
    assert_close(h, y[:, -1])


def test_reference_model_adds_positions_draws_states_and_stacks_residual_layers():
    """Two residual layers with positions, in eval mode: the initial states are N(0,
    sqrt(2/(in+hidden))) from the global RNG, h then c, every layer before any layer runs."""
    torch.manual_seed(0)
    cfg = LSTMConfig(hidden_size=8, num_layers=2, residual=True, positions=True, cell="reference")
    model = LSTMModel(cfg).eval()
    with torch.no_grad():
        model.wpe.weight.normal_()
    x = torch.randn(2, 3, 8)
    torch.manual_seed(7)
    y = model(x)

    torch.manual_seed(7)
    std = math.sqrt(2.0 / (8 + 8))
    states = [
        (torch.empty(2, 8).normal_(0.0, std), torch.empty(2, 8).normal_(0.0, std)) for _ in range(2)
    ]
    want = x + model.wpe.weight[:3]
    for blk, (h0, c0) in zip(model.layers, states, strict=True):
        want = want + _by_hand(blk.cell, want, h0, c0)[0]
    assert_close(y, want)
    assert model.ln_f is None


def test_layer_norm_uses_unbiased_variance_and_eps_inside_the_sqrt():
    norm = ReferenceLayerNorm(4)
    with torch.no_grad():
        norm.alpha.fill_(1.0)
        norm.beta.zero_()
    # Unbiased var of [0, 0, 0, 2e-3] is 1e-6, the size of eps: eps placement shows.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 2e-3]], dtype=torch.float64)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).sum(-1, keepdim=True) / 3
    got = norm.double()(x)
    assert_close(got, (x - mean) / torch.sqrt(var + 1e-6))
    assert not torch.allclose(got, F.layer_norm(x, (4,), eps=1e-6))  # biased variance
    assert not torch.allclose(got, (x - mean) / (torch.sqrt(var) + 1e-6))  # eps outside


def test_every_reference_parameter_starts_uniform_within_one_over_sqrt_hidden():
    torch.manual_seed(0)
    model = _model("tiny", "reference")
    hidden = model.config.hidden_size
    bound = 1 / math.sqrt(hidden)
    for name, p in model.layers.named_parameters():
        assert p.abs().max() <= bound, name
        assert p.abs().max() > bound / 4, name  # drawn, not zero or constant
        assert p.std() > 0, name
    for blk in model.layers:
        for norm in (blk.cell.ln_i2h, blk.cell.ln_h2h, blk.cell.ln_cell):
            assert not torch.all(norm.alpha == 1.0)
            assert not torch.all(norm.beta == 0.0)
        # The reference's LayerNorm draws from its own width: the 4*hidden pre-activation norms
        # stay within 1/sqrt(4*hidden).
        assert blk.cell.ln_i2h.alpha.abs().max() <= 1 / math.sqrt(4 * hidden)
        assert blk.cell.ln_h2h.beta.abs().max() <= 1 / math.sqrt(4 * hidden)


def test_dropout_is_random_in_training_and_off_in_evaluation():
    torch.manual_seed(0)
    blk = ReferenceLSTMBlock(16, residual=False, dropout=0.5)
    x, state = torch.randn(4, 5, 16), (torch.randn(4, 16), torch.randn(4, 16))

    blk.train()
    torch.manual_seed(1)
    a = blk(x, state)
    torch.manual_seed(2)
    b = blk(x, state)
    torch.manual_seed(1)
    again = blk(x, state)
    assert not torch.allclose(a, b)
    assert torch.equal(a, again)
    assert 0.3 < (a == 0).float().mean() < 0.7  # dropped h is the output

    blk.eval()
    torch.manual_seed(1)
    c = blk(x, state)
    torch.manual_seed(2)
    d = blk(x, state)
    assert torch.equal(c, d)
    no_dropout = ReferenceLSTMBlock(16, residual=False, dropout=0.0)
    no_dropout.load_state_dict(blk.state_dict())
    assert_close(c, no_dropout.train()(x, state))


def test_dropped_h_feeds_the_next_step():
    """With dropout on, the recurrence sees the dropped h: a step-by-step rerun with the
    recorded masks reproduces the output only if the dropped h is fed back."""
    torch.manual_seed(0)
    cell = LayerNormLSTMCell(8, 8, dropout=0.5).train()
    x, h0, c0 = torch.randn(3, 4, 8), torch.randn(3, 8), torch.randn(3, 8)
    torch.manual_seed(3)
    y, _ = cell(x, (h0, c0))
    kept = y != 0
    cell.eval()
    h, c, want = h0, c0, []
    for t in range(4):
        h, c = cell.step(cell.project_inputs(x[:, t : t + 1])[:, 0], h, c)
        h = h * kept[:, t] / 0.5
        want.append(h)
    assert_close(y, torch.stack(want, 1))


def test_initial_states_are_drawn_afresh_on_every_call():
    torch.manual_seed(0)
    model = _model("tiny", "reference").eval()
    x = torch.randn(2, 6, 64)
    first, second = model(x), model(x)
    assert not torch.allclose(first, second)
    torch.manual_seed(5)
    a = model(x)
    torch.manual_seed(5)
    b = model(x)
    assert torch.equal(a, b)  # seeded: deterministic
    h1, _ = model.layers[0].cell.initial_state(x)
    h2, _ = model.layers[0].cell.initial_state(x)
    assert not torch.equal(h1, h2)
    assert h1.dtype == x.dtype and h1.device == x.device and h1.shape == (2, 64)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("size", list(LSTM_SIZES))
def test_groups_cover_every_parameter_for_every_size_and_cell(size, cell):
    torch.manual_seed(0)
    bb = LSTMBackbone(_model(size, cell))
    bb.check_groups()
    g = bb.groups()
    cfg = LSTM_SIZES[size]
    L = cfg["num_layers"]
    assert bb.width == cfg["hidden_size"]
    assert bb.n_layers == L
    assert len(g.attn) == len(g.ff) == L
    assert all(ff == [] for ff in g.ff)
    assert g.unused == []
    assert len(g.pos) == (1 if cfg["positions"] else 0)
    assert len(g.ln) == (3 * L if cell == "reference" else L + 1)
    has_ln_f = any(k.startswith("ln_f.") for k in bb.model.state_dict())
    assert has_ln_f == (cell == "fused")


def test_reference_depth_truncation_keeps_groups_and_forward():
    torch.manual_seed(0)
    bb = LSTMBackbone(_model("tiny", "reference"))
    bb.truncate(1)
    bb.check_groups()
    assert bb.n_layers == 1 and bb.model.config.num_layers == 1
    assert len(bb.groups().ln) == 3
    assert bb(torch.randn(2, 4, 64)).shape == (2, 4, 64)
    assert bb.max_positions == 1024


def _trainable(preset: str, bb: LSTMBackbone, inp: nn.Module, out: nn.Module) -> int:
    whole = nn.ModuleList([inp, bb, out])
    apply_preset(whole, preset, bb, inp, out)
    return sum(p.numel() for p in whole.parameters() if p.requires_grad)


def test_presets_train_the_expected_counts_for_the_reference_l3():
    torch.manual_seed(0)
    bb = LSTMBackbone(_model("l3", "reference", dropout=0.1))
    inp, out = nn.Linear(10, 768), nn.Linear(768, 2)
    io = (10 * 768 + 768) + (768 * 2 + 2)
    per_layer_attn = 2 * (768 * 3072 + 3072)  # i2h and h2h, weights and biases
    per_layer_ln = 2 * (2 * 3072) + 2 * 768  # ln_i2h, ln_h2h (alpha, beta) and ln_cell
    assert _trainable("fpt", bb, inp, out) == io + 3 * per_layer_ln
    assert _trainable("full", bb, inp, out) == io + 3 * (per_layer_ln + per_layer_attn)
    assert sum(p.numel() for p in bb.parameters()) == 3 * (per_layer_ln + per_layer_attn)


def test_fused_cell_is_unchanged():
    """The default cell builds and computes exactly what the old LSTMModel did."""
    cfg = LSTM_SIZES["tiny"]
    d, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
    torch.manual_seed(0)
    model = _model("tiny", "fused")
    torch.manual_seed(0)
    wpe = nn.Embedding(cfg["max_positions"], d)
    nn.init.zeros_(wpe.weight)
    blocks = nn.ModuleList(LSTMBlock(d, eps, cfg["residual"]) for _ in range(cfg["num_layers"]))
    ln_f = nn.LayerNorm(d, eps=eps)
    old = {"wpe.weight": wpe.weight}
    old |= {f"layers.{k}": v for k, v in blocks.state_dict().items()}
    old |= {f"ln_f.{k}": v for k, v in ln_f.state_dict().items()}
    new = model.state_dict()
    assert list(new) == list(old)
    assert all(torch.equal(new[k], old[k]) for k in old)

    with torch.no_grad():
        wpe.weight.normal_()
        model.wpe.weight.copy_(wpe.weight)
    x = torch.randn(2, 9, d)
    want = x + wpe.weight[:9]
    for blk in blocks:
        want = blk(want)
    assert torch.equal(model(x), ln_f(want))
    assert LSTMConfig().cell == "fused" and LSTMConfig().dropout == 0.0


def test_config_rejects_unknown_cells_and_bad_dropout_even_when_set_late():
    with pytest.raises(ValueError, match="unknown LSTM cell"):
        LSTMConfig(cell="cudnn")
    with pytest.raises(ValueError, match="must lie in"):
        LSTMConfig(cell="reference", dropout=1.0)
    late = LSTMConfig(hidden_size=8, num_layers=1)
    late.cell = "cudnn"  # set after construction, as a run's config override does
    with pytest.raises(ValueError, match="unknown LSTM cell"):
        LSTMModel(late)


def test_fused_cell_ignores_dropout_and_round_trips_with_it(tmp_path):
    torch.manual_seed(0)
    plain = _model("tiny", "fused")
    torch.manual_seed(0)
    with_dropout = _model("tiny", "fused", dropout=0.1).train()
    x = torch.randn(2, 5, 64)
    assert torch.equal(plain.train()(x), with_dropout(x))
    with_dropout.save_pretrained(tmp_path / "m")
    assert LSTMModel.from_pretrained(tmp_path / "m").config.dropout == 0.1


@pytest.mark.parametrize("cell", CELLS)
def test_save_and_load_round_trip(tmp_path, cell):
    torch.manual_seed(0)
    extra = {"dropout": 0.1} if cell == "reference" else {}
    model = _model("tiny", cell, **extra).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = LSTMModel.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    want, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    x = torch.randn(2, 5, 64)
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    assert torch.equal(loaded(x), a)
