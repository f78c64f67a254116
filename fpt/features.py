"""Output-only feature caching: when nothing below the head trains, run the frozen input
layer and backbone once per example of a fixed dataset and train the head on the cache.

Opt in per run with the task option `cache_features: true` (it is part of the run's settings
hash: a cached run is a different run). What the option means:

- The frozen feature extractor (input layer, its dropout, the backbone) runs in eval mode,
  so an example's features are a fixed function of the example (a reservoir). Uncached
  output-only training applies dropout inside the frozen backbone, so the features of an
  example change from step to step; that is the one difference between a cached run and an
  uncached run without the option, and why caching is an option rather than the default.
- With the option set and caching switched off (environment `FPT_FEATURE_CACHE=off`), the
  same run trains uncached with the extractor in eval mode: same batches (the same indices
  drawn from the run's generator), same metrics up to float rounding (the cache is computed
  in eval-sized batches, training in train-sized ones). tests/test_features.py checks it.

Where caching applies: output-only presets (every trainable parameter in the output layer)
on fixed-dataset tasks whose training batches are not augmented (MNIST, digits, ListOps,
homology, CIFAR-10 with `augment: false`). Augmented CIFAR-10 draws a new view of an example
every time, and the bit tasks draw fresh examples every step, so there is nothing to reuse:
their forward pass per example is already the minimum (an output-only step runs no backward
through the backbone), and asking for the option there is an error that says so.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from fpt.models.fpt import FPT
from fpt.tasks.base import Batch, Task
from fpt.tasks.dataset import DatasetTask

OPTION = "cache_features"
ENV = "FPT_FEATURE_CACHE"


def requested(options: dict) -> bool:
    return bool(options.get(OPTION, False))


def why_not(task: Task, model: FPT) -> str | None:
    """Why `task`/`model` cannot be cached, or None when they can."""
    below = [n for n, p in model.named_parameters() if p.requires_grad]
    below = [n for n in below if not n.startswith("output_layer.")]
    if below:
        return (
            f"parameters below the output layer train ({below[0]}, ...); use trainable output_only"
        )
    if not isinstance(task, DatasetTask):
        return (
            f"{task.name} draws fresh examples every step, so no example is seen twice; "
            "its uncached output-only step already runs the backbone once per example"
        )
    if task.augments:
        return f"{task.name} augments training examples (a new view each draw); set augment: false"
    return None


class Head(nn.Module):
    """The FPT's output layer applied to cached answer-token features."""

    def __init__(self, model: FPT):
        super().__init__()
        self.fpt = model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.fpt.head_logits(x)


class _FrozenInEval(nn.Module):
    """The whole FPT with its frozen extractor held in eval mode: the uncached reference
    of a cached run (same semantics, no cache)."""

    def __init__(self, model: FPT):
        super().__init__()
        self.fpt = model

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        for m in (self.fpt.input_layer, self.fpt.dropout, self.fpt.backbone):
            m.eval()  # every call: the loop's model.train() must not switch dropout back on
        return self.fpt(x, lengths)


class CachedFeatures(Task):
    """A fixed-dataset task whose examples are the frozen extractor's answer-token features,
    (N, n_answer_tokens, width), computed once per example in stored order."""

    def __init__(self, task: DatasetTask, model: FPT, batch_size: int, autocast):
        super().__init__(task.device, task.options, task.data_dir)
        self.base = task
        self.name, self.input, self.head = task.name, task.input, task.head
        self.eval_splits = task.eval_splits
        self.feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        was_training = model.training
        model.eval()
        try:
            for name, split in task.splits.items():
                self.feats[name] = (self._extract(model, split, batch_size, autocast), split.y)
        finally:
            model.train(was_training)

    @torch.inference_mode()
    def _extract(self, model: FPT, split, batch_size: int, autocast) -> torch.Tensor:
        n = len(split)
        # Padded token data: extract in length order so each chunk is cut short.
        order = (
            torch.arange(n, device=self.device)
            if split.lengths is None
            else torch.argsort(split.lengths, stable=True)
        )
        out = None
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            b = self.base.to_batch(split.take(idx), None)
            with autocast():
                f = model.features(b.x, b.lengths)
            if out is None:
                out = torch.empty((n, *f.shape[1:]), device=self.device, dtype=torch.float32)
            out[idx] = f.float()
        return out

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        feats, y = self.feats["train"]
        # The same draw as DatasetTask.train_batch: the same examples as an uncached run.
        idx = torch.randint(
            0, len(y), (batch_size,), generator=generator, device=generator.device
        ).to(self.device)
        return Batch(feats[idx], y[idx][:, None])

    def eval_batches(self, split: str, batch_size: int):
        feats, y = self.feats[split]
        for i in range(0, len(y), batch_size):
            yield Batch(feats[i : i + batch_size], y[i : i + batch_size, None])

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.base.loss(logits, y)

    def n_correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.base.n_correct(logits, y)


def prepare(
    options: dict, task: Task, model: FPT, batch_size: int, autocast
) -> tuple[Task, nn.Module]:
    """(task, module) for the training loop. Without the option: unchanged. With it: the
    cached task and the head (or, with FPT_FEATURE_CACHE=off, the uncached equivalent).
    `batch_size`: examples per extraction forward pass."""
    if not requested(options):
        return task, model
    reason = why_not(task, model)
    if reason is not None:
        raise ValueError(f"{OPTION}: cannot cache {task.name} features: {reason}")
    if os.environ.get(ENV, "on").lower() in ("off", "0", "false", "no"):
        return task, _FrozenInEval(model)
    assert isinstance(task, DatasetTask)
    return CachedFeatures(task, model, batch_size, autocast), Head(model)
