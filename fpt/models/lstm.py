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

Layer norm placement (the trade-off). A "layer-norm LSTM" in the strict sense (Ba et al. 2016)
normalises the gate pre-activations inside the cell, at every time step. That cannot use the
fused cuDNN kernel: the recurrence becomes a Python loop over up to 1024 time steps (x layers),
tens of times slower on a GPU. We put the layer norm *between* layers instead (pre-norm: each
layer normalises its input, as a pre-LN transformer block does, plus a final norm), so every
layer is a plain single-layer `nn.LSTM` that runs on cuDNN (or the fused CPU kernel). The
layer norms still stabilise the stack and are still the `ln` group that FPT-style training
trains; what differs from an in-cell LN-LSTM is that the recurrent state is not normalised
between time steps. Residual connections (when on) add each layer's output to its input.

Parameter groups (see LSTMBackbone.groups): `ln` = every per-layer norm + the final norm;
`pos` = the learned position table (only in *_pos sizes; zero-initialised, like the ViT's new
table); the recurrent weights (weight_ih, weight_hh and both biases of each layer's nn.LSTM)
are mapped to `attn`, per layer: the recurrence is what mixes information across tokens, the
LSTM's counterpart of self-attention. So `full` trains them, `fpt` freezes them (a frozen random
LSTM with FPT-style training), and `fpt_ff` equals `fpt` (an LSTM has no separate feed-forward
block; `ff` is empty). There are no unused weights.

Weights are saved in the from_pretrained layout (config.json + model.safetensors), so a trained
LSTM can be loaded like a hub model, though no public checkpoint exists.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn


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
    hidden_size: int = 768
    num_layers: int = 3
    residual: bool = False
    positions: bool = False
    max_positions: int = 1024
    layer_norm_eps: float = 1e-5
    model_type: str = "fpt_lstm"

    @classmethod
    def from_json_file(cls, path: str | Path) -> LSTMConfig:
        return cls(**json.loads(Path(path).read_text()))

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


class LSTMBlock(nn.Module):
    """Pre-norm single-layer LSTM (cuDNN-fusable), optionally residual."""

    def __init__(self, hidden: int, eps: float, residual: bool):
        super().__init__()
        self.ln = nn.LayerNorm(hidden, eps=eps)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=1, batch_first=True)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.ln(x))
        return x + y if self.residual else y


class LSTMModel(nn.Module):
    """A stack of LSTMBlocks on (B, T, hidden) embeddings, with a final layer norm."""

    config_class = LSTMConfig

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.config = config
        d = config.hidden_size
        self.wpe = None
        if config.positions:
            self.wpe = nn.Embedding(config.max_positions, d)
            nn.init.zeros_(self.wpe.weight)
        self.layers = nn.ModuleList(
            LSTMBlock(d, config.layer_norm_eps, config.residual) for _ in range(config.num_layers)
        )
        self.ln_f = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.wpe is not None:
            x = x + self.wpe.weight[: x.shape[1]]
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
