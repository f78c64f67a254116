"""The kernel-count model: how many kernels a model's forward pass launches, counted from its
modules (a model of eager PyTorch, not a trace), and the fixed counts of a training step."""

from __future__ import annotations

LOSS_KERNELS = 12  # loss, accuracy, accumulation per micro-batch
BATCH_KERNELS = 8  # drawing a batch on the device
BLOCK_KERNELS = 8  # per block: attention scores/softmax/reshapes, residual adds


def forward_kernels(module, tokens: int, training: bool) -> int:
    """Kernels a forward pass of `module` launches: one per parametrised layer (Linear,
    Conv1D, LayerNorm, Embedding), eight per reference (hand-written) layer norm, three per
    parameter-free op module (activations), two per active dropout, a cuDNN/ATen LSTM three
    per token, and the reference LSTM cell ~27 per token (its Python loop over time steps)."""
    from torch import nn

    name = type(module).__name__
    if name == "LayerNormLSTMCell":
        drop = 2 if training and getattr(module, "dropout", 0) > 0 else 0
        return 10 + tokens * (27 + drop)
    children = list(module.children())
    if children:
        return sum(forward_kernels(c, tokens, training) for c in children)
    if isinstance(module, nn.Dropout):
        return 2 if training and module.p > 0 else 0
    if name == "ReferenceLayerNorm":
        return 8
    if isinstance(module, nn.RNNBase):
        return 3 * tokens
    if any(True for _ in module.parameters(recurse=False)):
        return 1
    return 3


def model_kernels(model, training: bool) -> int:
    """Kernels of one forward pass of an FPT model: its modules' but those of the backbone's
    unused groups, plus BLOCK_KERNELS per block."""
    tokens = model.input_spec.n_tokens
    unused = model.backbone.groups().unused
    n = forward_kernels(model, tokens, training)
    n -= sum(forward_kernels(m, tokens, training) for m in unused)
    return n + BLOCK_KERNELS * model.backbone.n_layers
