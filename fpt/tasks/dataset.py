"""Tasks over a fixed dataset held on the device as tensors.

Every split is loaded once (by the task constructor, so missing or corrupt files fail the
run before any model is built) and moved to the device. Training batches draw indices
uniformly with replacement from the run's generator: no sampler state beyond the generator,
so a resumed run sees exactly the batches an uninterrupted one would. Evaluation walks each
split's whole fixed set in order.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from fpt.tasks.base import Batch, Task


@dataclass
class Split:
    """`x`: stored examples (uint8 images or uint8 token ids, right-padded with 0);
    `y`: (N,) int64 labels (batches carry them as (B, 1): one answer per example); `lengths`: (N,) real lengths for token data, else None."""

    x: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.y.shape[0]

    def take(self, idx: torch.Tensor) -> Split:
        return Split(self.x[idx], self.y[idx], None if self.lengths is None else self.lengths[idx])

    def to(self, device: torch.device) -> Split:
        return Split(
            self.x.to(device),
            self.y.to(device),
            None if self.lengths is None else self.lengths.to(device),
        )


def carve(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of range(n) into (rest, held_out) with `size` held out."""
    if not 0 < size < n:
        raise ValueError(f"cannot hold out {size} of {n} examples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[size:].sort().values, perm[:size].sort().values


def hold_out(
    task: str, n: int, size: Any, seed: int, option: str = "val_size"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`carve` for a held-out split that may be empty: (rest, held_out), held_out None when
    `size` is 0 (then rest is all of range(n)). A negative size, or one that leaves nothing
    to train on, is an error naming the option and the fix."""
    size = check_size(task, option, size)
    if size == 0:
        return torch.arange(n), None
    if size >= n:
        raise ValueError(
            f"{task}: {option}={size} holds out the whole training set ({n} examples): use a "
            f"{option} below {n}, or {option}: 0 to train on all {n} with no val split"
        )
    return carve(n, size, seed)


def check_size(task: str, option: str, size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or size != int(size):
        raise ValueError(f"{task}: {option}={size!r} is not a whole number of examples")
    if size < 0:
        raise ValueError(
            f"{task}: {option}={int(size)} is negative: use a positive {option}, or {option}: 0 "
            "to train on the whole training set with no val split"
        )
    return int(size)


def pad_ids(seqs: list[torch.Tensor], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncate each id sequence to `max_length` and right-pad with 0 into a uint8 tensor."""
    lengths = torch.tensor([min(len(s), max_length) for s in seqs], dtype=torch.int64)
    width = int(lengths.max()) if len(seqs) else 1
    out = torch.zeros(len(seqs), width, dtype=torch.uint8)
    for i, s in enumerate(seqs):
        out[i, : lengths[i]] = s[: lengths[i]]
    return out, lengths


class DatasetTask(Task):
    """Subclasses set `name`, `input`, `head`, `eval_splits`, fill `self.splits` (CPU tensors,
    moved to the device here) and implement `to_batch`."""

    defaults: dict[str, Any] = {"data_seed": 1234}

    def setup(self) -> None:
        super().setup()
        self.splits: dict[str, Split] = {}

    @property
    def augments(self) -> bool:
        """Whether `to_batch` draws a random view of training examples (then an example's
        model input differs per draw and its features cannot be cached: fpt.features)."""
        return False

    def _to_device(self) -> None:
        self.splits = {k: v.to(self.device) for k, v in self.splits.items()}

    def to_batch(self, s: Split, generator: torch.Generator | None) -> Batch:
        """Stored examples -> model inputs; `generator` is given for training batches
        (augmentation draws from it) and None for evaluation."""
        raise NotImplementedError

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        train = self.splits["train"]
        idx = torch.randint(
            0, len(train), (batch_size,), generator=generator, device=generator.device
        ).to(self.device)
        return self.to_batch(train.take(idx), generator)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        s = self.splits[split]
        for i in range(0, len(s), batch_size):
            idx = torch.arange(i, min(i + batch_size, len(s)), device=self.device)
            yield self.to_batch(s.take(idx), None)

    def split_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "split_sizes": self.split_sizes()}


READOUTS = ("last_token", "reference")


def check_readout(task: str, options: dict[str, Any]) -> str:
    readout = options.get("readout", "last_token")
    if readout not in READOUTS:
        raise ValueError(f"{task}: readout={readout!r}; use one of {READOUTS}")
    return readout


class TokenTask(DatasetTask):
    """Right-padded token ids (pad id 0).

    Option `readout` (the task modules document what each means for their task):
    - `last_token` (default): batches carry Batch.lengths, so the model masks the padding
      and reads the last real token; each batch is cut to its longest example, so short
      batches cost less than `input.n_tokens`.
    - `reference`: the reference code's batches: `lengths=None` (the model applies no mask
      and reads the last position, usually a pad token), padded with 0 to `input.n_tokens`
      when `reference_pads_to_max` (ListOps) or to the batch's longest example (homology).

    A batch's width (its longest example) is read from each split's lengths kept on the
    host (`host_lengths`), not from the device copy: on an accelerator, reading a device
    value back waits for all the work queued before it. Evaluation batches are planned once
    per split (order and widths); a training batch's width is known on the host when its
    indices are drawn there (a CPU generator), else it is read from the device.
    """

    # `readout: reference` pads every batch to input.n_tokens (True) or to its longest (False).
    reference_pads_to_max = False

    def _to_device(self) -> None:
        self.host_lengths = {k: v.lengths for k, v in self.splits.items()}
        # (split, batch size) -> the device's order of the split's examples, each batch's width
        self._eval_plans: dict[tuple[str, int], tuple[torch.Tensor, list[int]]] = {}
        super()._to_device()

    def to_batch(
        self, s: Split, generator: torch.Generator | None, width: int | None = None
    ) -> Batch:
        """`width`: the longest of `s.lengths` when the caller knows it on the host (else it
        is read from `s.lengths`)."""
        assert s.lengths is not None
        reference = self.options.get("readout", "last_token") == "reference"
        if reference and self.reference_pads_to_max:
            width = self.input.n_tokens
        elif width is None:
            width = int(s.lengths.max())
        if reference:
            x = s.x[:, :width].long()
            if x.shape[1] < width:  # stored splits are only as wide as their longest example
                x = torch.nn.functional.pad(x, (0, width - x.shape[1]), value=0)
            return Batch(x, s.y[:, None], None)
        return Batch(s.x[:, :width].long(), s.y[:, None], s.lengths)

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        # DatasetTask.train_batch's draw
        train = self.splits["train"]
        idx = torch.randint(
            0, len(train), (batch_size,), generator=generator, device=generator.device
        )
        width = None
        if idx.device.type == "cpu":  # drawn on the host: the batch's lengths are known there
            width = int(self.host_lengths["train"][idx].max())
        return self.to_batch(train.take(idx.to(self.device)), generator, width)

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        s = self.splits[split]
        order, widths = self._eval_plan(split, batch_size)
        for k, i in enumerate(range(0, len(s), batch_size)):
            yield self.to_batch(s.take(order[i : i + batch_size]), None, widths[k])

    def _eval_plan(self, split: str, batch_size: int) -> tuple[torch.Tensor, list[int]]:
        """The split's examples sorted by length, so that padding (and compute) is minimal
        (order does not change the mean loss or the accuracy), and each batch's width: from
        the host lengths, once per split and batch size."""
        key = (split, batch_size)
        if key not in self._eval_plans:
            lengths = self.host_lengths[split]
            order = torch.argsort(lengths, stable=True)
            ordered = lengths[order].tolist()
            n = len(ordered)
            widths = [ordered[min(i + batch_size, n) - 1] for i in range(0, n, batch_size)]
            self._eval_plans[key] = (order.to(self.device), widths)
        return self._eval_plans[key]
