"""The layer-norm LSTM baseline (the paper's 3-layer, 768-wide LSTM) and its architecture
variants, exposed as `size` values of the `lstm` backbone:

| size         | layers | residual | learned positions |
|--------------|--------|----------|-------------------|
| l3           | 3      | no       | no                |  the paper's LSTM baseline
| l3_res       | 3      | yes      | no                |
| l3_pos       | 3      | no       | yes               |
| l12          | 12     | no       | no                |  transformer depth
| l12_res      | 12     | yes      | no                |
| l12_res_pos  | 12     | yes      | yes               |  the most transformer-like
| tiny         | 2      | yes      | yes               |  64 wide, for tests (exercises every group)

Every size can be built with either of two cells (`LSTMConfig.cell`); both honour the size's
layers, residual connections and positions (a zero-initialised learned table added to the
input).

`cell="fused"` (the default): layer norm *between* layers. Each layer is pre-norm (it
normalises its input, as a pre-LN transformer block does) followed by a plain single-layer
`nn.LSTM`, and a final norm closes the stack. Every layer runs on cuDNN (or the fused CPU
kernel). The recurrent state is not normalised between time steps.

`cell="reference"`: the architecture the paper actually ran (kzl/universal-computation's
`LNLSTM(768, 768, num_layers=3, residual=False, dropout=0.1, cln=False)`), an in-cell
layer-norm LSTM in the sense of Ba et al. (2016). At every time step it layer-normalises the
input projection and the recurrent projection separately, then adds them. It also normalises
the cell state before the output gate. Details that differ from textbook layer norm and LSTM,
all kept from the reference:
- the norms use the unbiased variance, with eps 1e-6 inside the square root, whatever
  `layer_norm_eps` says (that field sets the fused cell's norms only);
- every cell parameter (projections, biases and the norms' scales and shifts) starts uniform
  in +-1/sqrt(size): the cell norm and the projections use the hidden size, and the two
  pre-activation norms use their own 4*hidden width;
- the initial (h, c) of each layer is drawn afresh on every call from
  N(0, sqrt(2 / (input + hidden))), in training and in evaluation, from torch's global RNG;
- dropout (`LSTMConfig.dropout`, 0.1 in the paper) is applied to each step's h in training,
  and the dropped h is both the output and the next step's recurrent input (the fused cell
  has no dropout and ignores that field);
- there is no final norm.

The trade-off: the reference cell is a Python loop over time steps (up to 1024, times the
number of layers), tens of times slower on a GPU than the fused cuDNN kernel. Use it to
reproduce the paper's baseline faithfully. Use the fused cell for speed.

Parameter groups (see LSTMBackbone.groups), per cell:
- fused: `ln` = every per-layer input norm + the final norm; `attn` = each layer's nn.LSTM
  (weight_ih, weight_hh and both biases);
- reference: `ln` = each layer's three norms (input projection, recurrent projection and cell
  state); `attn` = each layer's two projections, i2h and h2h, with their biases.
In both, `pos` = the learned position table (only in *_pos sizes; zero-initialised, like the
ViT's new table). The recurrent weights are `attn` because the recurrence is what mixes
information across tokens: it is the LSTM's counterpart of self-attention. So `full` trains
them, `fpt` freezes them (a frozen random LSTM with FPT-style training), and `fpt_ff` equals
`fpt` (an LSTM has no separate feed-forward block; `ff` is empty). There are no unused weights.

Weights are saved in the from_pretrained layout (config.json + model.safetensors), so a trained
LSTM can be loaded like a hub model, though no public checkpoint exists.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CELLS = ("fused", "reference")

# The reference cell's layer norm epsilon (added to the unbiased variance inside the sqrt).
REFERENCE_EPS = 1e-6


def _size(layers: int, residual: bool, positions: bool, hidden: int = 768) -> dict:
    return {
        "model_type": "fpt_lstm",
        "hidden_size": hidden,
        "num_layers": layers,
        "residual": residual,
        "positions": positions,
        "max_positions": 1024,
        "layer_norm_eps": 1e-5,
    }


LSTM_SIZES: dict[str, dict] = {
    "l3": _size(3, False, False),
    "l3_res": _size(3, True, False),
    "l3_pos": _size(3, False, True),
    "l12": _size(12, False, False),
    "l12_res": _size(12, True, False),
    "l12_res_pos": _size(12, True, True),
    "tiny": _size(2, True, True, hidden=64),
}


@dataclass
class LSTMConfig:
    """`cell`: "fused" (LN between layers, cuDNN) or "reference" (the paper's in-cell LN-LSTM);
    `dropout`: the reference cell's dropout on h. The fused cell has no dropout and ignores
    it, so one run setting can carry the paper's 0.1 whichever cell it builds."""

    hidden_size: int = 768
    num_layers: int = 3
    residual: bool = False
    positions: bool = False
    max_positions: int = 1024
    layer_norm_eps: float = 1e-5
    model_type: str = "fpt_lstm"
    cell: str = "fused"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Also called by LSTMModel: fields set after construction skip __post_init__."""
        if self.cell not in CELLS:
            raise ValueError(f"unknown LSTM cell {self.cell!r}; use one of {', '.join(CELLS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LSTM dropout={self.dropout} must lie in [0, 1)")

    @classmethod
    def from_json_file(cls, path: str | Path) -> LSTMConfig:
        return cls(**json.loads(Path(path).read_text()))

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


class LSTMBlock(nn.Module):
    """Pre-norm single-layer LSTM (cuDNN-fusable), optionally residual: the fused cell."""

    def __init__(self, hidden: int, eps: float, residual: bool):
        super().__init__()
        self.ln = nn.LayerNorm(hidden, eps=eps)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=1, batch_first=True)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.ln(x))
        return x + y if self.residual else y


def _uniform_(params: list[nn.Parameter], size: int) -> None:
    """The reference's init for every cell tensor: U(-1/sqrt(size), 1/sqrt(size)), in order."""
    bound = 1.0 / math.sqrt(size)
    with torch.no_grad():
        for p in params:
            p.uniform_(-bound, bound)


class ReferenceLayerNorm(nn.Module):
    """The reference LN-LSTM's layer norm. It differs from nn.LayerNorm in three ways: the
    variance is unbiased, eps sits inside the sqrt, and the scale and shift start uniform
    in +-1/sqrt(size), not at ones and zeros."""

    def __init__(self, size: int, eps: float = REFERENCE_EPS):
        super().__init__()
        self.size = size
        self.eps = eps
        self.alpha = nn.Parameter(torch.empty(size))
        self.beta = nn.Parameter(torch.empty(size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_([self.alpha, self.beta], self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True)  # unbiased, as the reference's torch.var
        return self.alpha * (x - mean) / torch.sqrt(var + self.eps) + self.beta


class LayerNormLSTMCell(nn.Module):
    """One layer of the reference LN-LSTM: its parameters, its random initial state and one
    time step. The input projection does not depend on the recurrence, so it is computed
    (and normalised) for all time steps at once; only h2h runs step by step."""

    def __init__(self, input_size: int, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.dropout = dropout
        self.i2h = nn.Linear(input_size, 4 * hidden_size)
        self.h2h = nn.Linear(hidden_size, 4 * hidden_size)
        _uniform_([self.i2h.weight, self.i2h.bias, self.h2h.weight, self.h2h.bias], hidden_size)
        # Created in the reference's order (h2h's norm first), so a seed draws the same weights.
        self.ln_h2h = ReferenceLayerNorm(4 * hidden_size)
        self.ln_i2h = ReferenceLayerNorm(4 * hidden_size)
        self.ln_cell = ReferenceLayerNorm(hidden_size)

    def initial_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh random (h, c) for a batch like `x`, drawn from the global RNG on every call
        (the reference's Xavier-style init_hidden): N(0, sqrt(2 / (input + hidden)))."""
        std = math.sqrt(2.0 / (self.input_size + self.hidden_size))
        shape = (x.shape[0], self.hidden_size)
        h = torch.empty(shape, device=x.device, dtype=x.dtype).normal_(0.0, std)
        c = torch.empty(shape, device=x.device, dtype=x.dtype).normal_(0.0, std)
        return h, c

    def project_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """LN(i2h(x)) for every time step: (B, T, input) -> (B, T, 4*hidden)."""
        return self.ln_i2h(self.i2h(x))

    def step(
        self, x_proj: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step from the projected input (B, 4*hidden) and the state (B, hidden)."""
        n = self.hidden_size
        preact = x_proj + self.ln_h2h(self.h2h(h))
        i, f, o = preact[:, : 3 * n].sigmoid().chunk(3, dim=-1)
        g = preact[:, 3 * n :].tanh()
        c = self.ln_cell(c * f + i * g)
        h = o * c.tanh()
        if self.training and self.dropout > 0.0:
            h = F.dropout(h, p=self.dropout, training=True)
        return h, c

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run over a (B, T, input) sequence from `state`; returns (B, T, hidden) and the last
        (h, c)."""
        h, c = state
        x_proj = self.project_inputs(x)
        outputs = []
        for t in range(x.shape[1]):
            h, c = self.step(x_proj[:, t], h, c)
            outputs.append(h)
        return torch.stack(outputs, dim=1), (h, c)


class ReferenceLSTMBlock(nn.Module):
    """One reference LN-LSTM layer over the sequence, optionally residual: the reference cell."""

    def __init__(self, hidden: int, residual: bool, dropout: float):
        super().__init__()
        self.cell = LayerNormLSTMCell(hidden, hidden, dropout=dropout)
        self.residual = residual

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        if state is None:
            state = self.cell.initial_state(x)
        y, _ = self.cell(x, state)
        return x + y if self.residual else y


class LSTMModel(nn.Module):
    """A stack of LSTM layers on (B, T, hidden) embeddings: LSTMBlocks with a final layer norm
    (cell="fused") or ReferenceLSTMBlocks without one (cell="reference")."""

    config_class = LSTMConfig

    def __init__(self, config: LSTMConfig):
        super().__init__()
        config.validate()
        self.config = config
        d = config.hidden_size
        self.wpe = None
        if config.positions:
            self.wpe = nn.Embedding(config.max_positions, d)
            nn.init.zeros_(self.wpe.weight)
        self.ln_f: nn.LayerNorm | None = None
        if config.cell == "reference":
            self.layers = nn.ModuleList(
                ReferenceLSTMBlock(d, config.residual, config.dropout)
                for _ in range(config.num_layers)
            )
        else:
            self.layers = nn.ModuleList(
                LSTMBlock(d, config.layer_norm_eps, config.residual)
                for _ in range(config.num_layers)
            )
            self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wpe is not None:
            x = x + self.wpe.weight[: x.shape[1]]
        if self.config.cell == "reference":
            # Every layer's initial state is drawn before any layer runs, in layer order, as
            # the reference does, so a seeded run draws the same numbers.
            states = [blk.cell.initial_state(x) for blk in self.layers]
            for blk, state in zip(self.layers, states, strict=True):
                x = blk(x, state)
            return x
        for blk in self.layers:
            x = blk(x)
        return self.ln_f(x)

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.config.to_json_file(path / "config.json")
        save_file(
            {k: v.contiguous() for k, v in self.state_dict().items()}, path / "model.safetensors"
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, **_ignored) -> LSTMModel:
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{path} is not a saved LSTM (no config.json)")
        model = cls(LSTMConfig.from_json_file(path / "config.json"))
        model.load_state_dict(load_file(path / "model.safetensors"), strict=True)
        return model
