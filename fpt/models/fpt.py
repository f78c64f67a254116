"""The Frozen Pretrained Transformer: a new input layer, a (mostly frozen) backbone driven
through `inputs_embeds`, dropout, and a new output layer on the answer tokens."""

from __future__ import annotations

import torch
from torch import nn

from fpt.models.backbones import Backbone
from fpt.models.freezing import apply_preset
from fpt.tasks.base import HeadSpec, InputSpec

INPUT_INITS = ("orthogonal", "default")


class FPT(nn.Module):
    def __init__(
        self,
        backbone: Backbone,
        input_spec: InputSpec,
        head: HeadSpec,
        input_init: str = "orthogonal",
        dropout: float = 0.1,
    ):
        super().__init__()
        if input_spec.n_tokens > backbone.max_positions:
            raise ValueError(
                f"the task has {input_spec.n_tokens} tokens but the {backbone.family} backbone has only "
                f"{backbone.max_positions} positions"
            )
        self.input_spec, self.head = input_spec, head
        width = backbone.width
        if input_spec.kind == "tokens":
            self.input_layer: nn.Module = nn.Embedding(input_spec.dim, width)
        else:
            self.input_layer = nn.Linear(input_spec.dim, width)
            if input_init == "orthogonal":  # the reference code's init
                nn.init.orthogonal_(self.input_layer.weight, gain=1.41)
                nn.init.zeros_(self.input_layer.bias)
            elif input_init != "default":
                raise ValueError(f"input_init={input_init!r}; use one of {INPUT_INITS}")
        self.dropout = nn.Dropout(dropout)
        self.backbone = backbone
        self.output_layer = nn.Linear(width, head.outputs_per_token * head.n_classes)

    def freeze(self, preset: str) -> None:
        apply_preset(self, preset, self.backbone, self.input_layer, self.output_layer)

    def features(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, output_attentions: bool = False
    ):
        """Backbone hidden states of the answer tokens: (B, n_answer_tokens, width)."""
        h = self.dropout(self.input_layer(x))
        mask = None
        if lengths is not None:  # right-padded token tasks: mask the padding
            mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
        out = self.backbone(h, attention_mask=mask, output_attentions=output_attentions)
        hidden, attn = out if output_attentions else (out, None)
        k = self.head.n_answer_tokens
        if lengths is None:
            ans = hidden[:, -k:]
        else:  # the last k real tokens of each example
            idx = lengths[:, None] - k + torch.arange(k, device=x.device)[None]
            ans = hidden.gather(1, idx[..., None].expand(-1, -1, hidden.shape[-1]))
        return (ans, attn) if output_attentions else ans

    def head_logits(self, answer_hidden: torch.Tensor) -> torch.Tensor:
        """(B, n_answer_tokens, width) -> (B, n_outputs, n_classes)."""
        b = answer_hidden.shape[0]
        return self.output_layer(answer_hidden).reshape(b, self.head.n_outputs, self.head.n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head_logits(self.features(x, lengths))

    def configure_optimizers(self, lr: float, device: torch.device | str) -> torch.optim.Adam:
        """The training optimizer: Adam over the trainable parameters only (frozen weights get
        no optimizer state), fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        fused = {"fused": True} if torch.device(device).type == "cuda" else {}
        return torch.optim.Adam(params, lr=lr, **fused)

    def flops_per_example(self, task=None) -> tuple[int, int, int]:
        """(forward, activation-gradient, weight-gradient) FLOPs of one training example,
        counted from the model's shapes (nanoGPT-style, matmuls only). `task`: anything with
        the task's `input` and `head` specs (a Task); default: the ones the model was built for.

          forward   F  = T * (2*N_blk + 2*d_in*d + 4*L*T*d) + k * 2*d*o
          backward  dX = T * (2*N_blk + 8*L*T*d) + k * 2*d*o   activation gradients through the
                            head and backbone (attention scores: both operands, 2x forward);
                            0 when nothing below the head trains
                    dW = T * (2*N_blk_train + 2*d_in*d*[input trains]) + k * 2*d*o

        N_blk = dense (2-D) weights in the attention and feed-forward blocks, N_blk_train the
        trainable ones, T tokens, d width, L blocks, d_in input features per token (0 for an
        embedding lookup), k answer tokens, o outputs per answer token. Attention scores count
        in full (4*T*d per token and layer: QK^T and AV), as nanoGPT counts them. With
        everything trainable this is nanoGPT's 6N + 12LTd per token. A step of batch B costs
        B * (F + dX + dW); an evaluation example costs F."""
        inp, head = (task.input, task.head) if task is not None else (self.input_spec, self.head)
        g = self.backbone.groups()
        blk = [p for mods in g.attn + g.ff for m in mods for p in m.parameters() if p.dim() == 2]
        n_blk = sum(p.numel() for p in blk)
        n_blk_train = sum(p.numel() for p in blk if p.requires_grad)
        T, d, L = inp.n_tokens, self.backbone.width, self.backbone.n_layers
        d_in = inp.dim if inp.kind == "continuous" else 0
        k, o = head.n_answer_tokens, head.outputs_per_token * head.n_classes
        fwd = T * (2 * n_blk + 2 * d_in * d + 4 * L * T * d) + k * 2 * d * o
        below_head = [
            p
            for n, p in self.named_parameters()
            if p.requires_grad and not n.startswith("output_layer")
        ]
        dx = T * (2 * n_blk + 8 * L * T * d) + k * 2 * d * o if below_head else 0
        input_trains = any(p.requires_grad for p in self.input_layer.parameters())
        dw = T * (2 * n_blk_train + 2 * d_in * d * input_trains) + k * 2 * d * o
        return fwd, dx, dw


def count_params(model: FPT) -> dict[str, dict[str, int]]:
    """Total, trainable and reachable parameter counts per group, plus the overall totals
    ("all"). `reachable`: the trainable parameters that can receive a gradient for the task's
    `model.input_spec.n_tokens` tokens: trainable less the position rows no token indexes
    (fpt.models.reach.UNREACHABLE, per family)."""
    from fpt.models.reach import unreachable

    never = {
        id(mod): n
        for mod, n in unreachable(model.backbone, model.input_spec.n_tokens)
        if any(p.requires_grad for p in mod.parameters())
    }
    g = model.backbone.groups()
    groups = {
        "input": [model.input_layer],
        "output": [model.output_layer],
        "pos": g.pos,
        "ln": g.ln,
        "attn": [m for blk in g.attn for m in blk],
        "ff": [m for blk in g.ff for m in blk],
        "unused": g.unused,
    }
    out: dict[str, dict[str, int]] = {}
    for name, mods in groups.items():
        params = {id(p): p for m in mods for p in m.parameters()}.values()
        trainable = sum(p.numel() for p in params if p.requires_grad)
        out[name] = {
            "total": sum(p.numel() for p in params),
            "trainable": trainable,
            "reachable": trainable - sum(never.get(id(m), 0) for m in set(mods)),
        }
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["all"] = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": trainable,
        "reachable": trainable - sum(never.values()),
    }
    return out
