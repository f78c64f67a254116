"""What every task owns: its input spec, its head shape, its batches, its loss and metric.

A task hands the model tensors already on the training device. Training batches come from a
seeded generator (synthetic tasks) or a seeded sampler over a fixed dataset; evaluation runs
over a fixed, seeded set so that every evaluation of every run measures the same thing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from fpt.data import DEFAULT_DATA_DIR, DatasetInfo


@dataclass(frozen=True)
class InputSpec:
    """How examples reach the backbone: `n_tokens` tokens of `dim` features (continuous) or
    token ids below `dim` (kind="tokens", `dim` is then the vocabulary size)."""

    kind: Literal["continuous", "tokens"]
    dim: int
    n_tokens: int


@dataclass(frozen=True)
class HeadSpec:
    """The output layer reads the last `n_answer_tokens` tokens and predicts
    `outputs_per_token` labels of `n_classes` classes from each of them."""

    n_answer_tokens: int
    outputs_per_token: int
    n_classes: int

    @property
    def n_outputs(self) -> int:
        return self.n_answer_tokens * self.outputs_per_token


@dataclass
class Batch:
    """`x`: (B, T, dim) floats or (B, T) ids; `y`: (B, n_outputs) class labels;
    `lengths`: (B,) real lengths for padded token tasks, else None."""

    x: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def split(self, size: int) -> list[Batch]:
        """Micro-batches of at most `size` examples."""
        n = len(self)
        out = []
        for i in range(0, n, size):
            lengths = None if self.lengths is None else self.lengths[i : i + size]
            out.append(Batch(self.x[i : i + size], self.y[i : i + size], lengths))
        return out


def shape_summary(name: str, input: InputSpec, head: HeadSpec) -> dict[str, Any]:
    """The task shape as `fpt describe` prints it (also `Task.describe`'s first keys)."""
    return {
        "task": name,
        "input_kind": input.kind,
        "tokens": input.n_tokens,
        "token_dim": input.dim,
        "answer_tokens": head.n_answer_tokens,
        "outputs_per_token": head.outputs_per_token,
        "classes": head.n_classes,
    }


class Task(ABC):
    """One task of the paper. Subclasses set `name`, implement `shapes` (the constructor
    takes `input` and `head` from it) and may narrow `eval_splits` per instance.

    A task declares everything the pipeline needs to know about it on its class, and the
    registry (`fpt.tasks.register`), the config schema's task enum, the Snakemake fetch
    rule and the tables read it from there: `name`, `label`, `paper_order`,
    `reported_split`, `datasets` (and `required_files` where the options decide)."""

    name: str
    # How tables and figures name the task (the paper's name, e.g. "C10 LRA"); empty: `name`.
    # Read from the class itself (fpt.tasks.task_label): a subclass does not inherit it.
    label: str = ""
    # The task's place among the paper's tasks (its column in the paper's tables, from 0);
    # None: not one of the paper's tasks (tables put those after the paper's, by name). Not
    # inherited either (fpt.tasks.paper_tasks): one task per place.
    paper_order: int | None = None
    # The split whose accuracy tables report as "test" (homology: "val", TAPE's valid split,
    # where the paper's number is).
    reported_split: str = "test"
    # The downloaded datasets the task reads, declared in the task's module (fpt.data);
    # registering the task registers them.
    datasets: tuple[DatasetInfo, ...] = ()
    input: InputSpec
    head: HeadSpec
    # Option defaults, merged under the given options (`options_of`).
    defaults: dict[str, Any] = {}
    # Splits evaluated at every evaluation. "val" drives model selection (early stopping,
    # lr sweeps); test splits are reported. The class value is the default; the constructor
    # copies it to the instance, and a task built without a val split (`val_size: 0`) drops
    # "val" from its own copy.
    eval_splits: tuple[str, ...] = ("val", "test")

    def __init__(
        self,
        device: torch.device,
        options: dict[str, Any] | None = None,
        data_dir: str | Path | None = None,
    ):
        if "data_dir" in (options or {}):
            # A machine path is not part of the experiment: it must not reach the settings.
            raise ValueError(
                "data_dir is not a task option: pass it as the data directory instead "
                "(`fpt train --data-dir DIR`, config key `data_dir`, make_task(data_dir=...))"
            )
        self.device = device
        self.options = self.options_of(options)
        # Where the task's files live on this machine (fpt.data: one folder per dataset).
        self.data_dir = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR)
        self.eval_splits = tuple(type(self).eval_splits)
        self.setup()

    def setup(self) -> None:
        """Build the task on `self.device` from `self.options` (the class defaults merged
        in) and `self.data_dir`: a subclass extends it, calling `super().setup()` first, so
        the constructor's signature is written once."""
        return None

    @classmethod
    def options_of(cls, options: dict[str, Any] | None) -> dict[str, Any]:
        """`options` over the class defaults."""
        return {**cls.defaults, **(options or {})}

    @classmethod
    def required_files(cls, options: dict[str, Any] | None, data_dir: str | Path) -> list[str]:
        """What a run with these options needs on disk before it can start (the Snakemake
        train rule's input): the markers of the task's datasets by default."""
        return [str(d.marker(data_dir)) for d in cls.datasets]

    @classmethod
    def shapes(cls, options: dict[str, Any] | None = None) -> tuple[InputSpec, HeadSpec]:
        """The input and head spec from the options (and the class defaults) alone: no data
        is read, so `fpt describe` and config checks can size a model without the dataset.
        Invalid options raise ValueError here, with the message the constructor gives."""
        raise NotImplementedError(f"{cls.__name__} does not define shapes()")

    @classmethod
    def reserved_seeds(cls, options: dict[str, Any] | None = None) -> set[int]:
        """Run seeds that would draw the task's evaluation examples as training batches (the
        synthetic tasks draw their fixed val/test sets from seeded generators too)."""
        return set()

    @classmethod
    def published_split_sizes(
        cls, options: dict[str, Any] | None = None
    ) -> dict[str, int | None] | None:
        """Examples per split with `options`, from the options and the dataset's published
        sizes (no data read): "train" (None for a task that draws fresh examples every step)
        and every evaluated split. `fpt plan` prices evaluation with it. None: not known
        (fpt.plan then assumes the options' sizes, else a default, and says so)."""
        return None

    @classmethod
    def has_val(cls, options: dict[str, Any] | None = None) -> bool:
        """Whether the task built with `options` has a "val" split (from the options alone,
        no data loading). True unless the task holds its val split out of the training set
        and `val_size` is 0."""
        return True

    @abstractmethod
    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A fresh training batch on `self.device`, drawn from `generator` (same device)."""

    @abstractmethod
    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        """The fixed evaluation set of `split` in batches of at most `batch_size`."""

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over every predicted label (per bit for the bit tasks)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))

    def n_correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Number of correctly predicted labels; accuracy = n_correct / y.numel()."""
        return (logits.argmax(-1) == y).sum()

    def describe(self) -> dict[str, Any]:
        return shape_summary(self.name, self.input, self.head)
