"""How a random backbone is drawn: the `random_init` setting.

The paper's random backbones (Table 2's Random row, the statistics-init and ladder baselines,
the fully trained transformer, the Bit Memory source run) came from the reference code's
transformers 4.1.1, whose `_init_weights` drew every Linear/Conv1D weight and every embedding
from N(0, initializer_range = 0.02), set biases to 0 and layer norms to weight 1 / bias 0.
transformers PR #13573 (2021) added GPT-2's residual scaling: `attn.c_proj` and `mlp.c_proj`
drawn with std 0.02 / sqrt(2 n_layer) (0.0041 for 12 layers), and some 5.x releases skip it
again, so `library` init depends on the installed version.

- `paper` (default): the reference's scheme, redrawn after the model is built, per family:

  | family            | paper                                                        |
  |-------------------|--------------------------------------------------------------|
  | gpt2              | 4.1.1 GPT-2: Linear/Conv1D/Embedding N(0, 0.02), bias 0, LN 1/0 |
  | bert, minilm      | 4.1.1 BERT: the same rule (initializer_range 0.02)            |
  | longformer        | 4.1.1 Longformer (RoBERTa): the same rule                     |
  | vit, t5           | the library's init: the paper never draws either at random    |

- `library`: whatever the installed transformers does (its version is in every metrics row).

The LSTM is fpt's own module with its own init (fpt.models.lstm); the setting does not apply.
Draws come from the global torch RNG, so the run's seed fixes them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def normal_init_(model: nn.Module, std: float) -> None:
    """transformers 4.1.1's `_init_weights` for GPT-2, BERT and Longformer: Linear/Conv1D
    weights and embeddings ~ N(0, std), their biases 0, layer norms weight 1 and bias 0. Every
    parameter must belong to one of those modules: an unknown one fails loudly."""
    from transformers.pytorch_utils import Conv1D

    done: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.Linear | Conv1D | nn.Embedding):
            module.weight.normal_(0.0, std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        else:
            continue
        done |= {id(p) for p in module.parameters(recurse=False)}
    missed = [n for n, p in model.named_parameters() if id(p) not in done]
    if missed:
        raise AssertionError(f"paper random init does not know these parameters: {missed[:5]}")


def _config_std(model: nn.Module) -> float:
    return float(model.config.initializer_range)


# family -> the reference's draw (None: the library's init is the paper's; see the table).
PAPER_INIT: dict[str, Callable[[nn.Module], None] | None] = {
    "gpt2": lambda m: normal_init_(m, _config_std(m)),
    "bert": lambda m: normal_init_(m, _config_std(m)),
    "minilm": lambda m: normal_init_(m, _config_std(m)),
    "longformer": lambda m: normal_init_(m, _config_std(m)),
    "vit": None,
    "t5": None,
}


def apply(family: str, model: nn.Module, scheme: str) -> None:
    """Redraw `model` (a freshly built HF model of `family`) per `scheme`."""
    if scheme == "library":
        return
    if scheme != "paper":
        raise ValueError(f"random_init={scheme!r}; use 'paper' or 'library'")
    draw = PAPER_INIT[family]
    if draw is not None:
        draw(model)
