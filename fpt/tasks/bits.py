"""Bit Memory and Bit XOR (the paper's section 3.1), generated on the device.

Both tasks are synthetic: training batches are drawn fresh from the run's generator; the
val and test sets are fixed, drawn once from `data_seed` (shared by every run, so every run
is scored on the same examples) on the CPU so they are identical on every device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from fpt.tasks.base import Batch, HeadSpec, InputSpec, Task
from fpt.tasks.registry import register

# Offsets added to data_seed per split, so val and test never share examples by seed.
_SPLIT_SEED_OFFSET = {"val": 1, "test": 2}


class _SyntheticTask(Task):
    """Fixed eval sets plus fresh training batches, both from `self.sample`."""

    defaults: dict[str, Any] = {"val_size": 256, "test_size": 1024, "data_seed": 1234}

    def setup(self) -> None:
        super().setup()
        self._eval_sets: dict[str, Batch] = {}
        if not self.has_val(self.options):  # val_size 0: no val split (as the image tasks)
            self.eval_splits = tuple(s for s in self.eval_splits if s != "val")

    @classmethod
    def has_val(cls, options: dict[str, Any] | None = None) -> bool:
        return int(cls.options_of(options)["val_size"]) > 0

    @classmethod
    def reserved_seeds(cls, options: dict[str, Any] | None = None) -> set[int]:
        # The training generator is seeded with the run's seed (fpt.train) and the eval sets
        # with data_seed + offset: equal seeds would train on the val or test examples.
        data_seed = int(cls.options_of(options)["data_seed"])
        return {data_seed + off for off in _SPLIT_SEED_OFFSET.values()}

    @classmethod
    def published_split_sizes(cls, options: dict[str, Any] | None = None) -> dict[str, int | None]:
        opts = cls.options_of(options)  # fresh training examples every step
        splits = [s for s in cls.eval_splits if s != "val" or cls.has_val(opts)]
        return {"train": None, **{s: int(opts[f"{s}_size"]) for s in splits}}

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        return self.sample(batch_size, generator)

    def eval_set(self, split: str) -> Batch:
        if split not in self._eval_sets:
            g = torch.Generator().manual_seed(
                int(self.options["data_seed"]) + _SPLIT_SEED_OFFSET[split]
            )
            batch = self._sample_on(torch.device("cpu"), int(self.options[f"{split}_size"]), g)
            self._eval_sets[split] = Batch(batch.x.to(self.device), batch.y.to(self.device))
        return self._eval_sets[split]

    def _sample_on(self, device: torch.device, n: int, generator: torch.Generator) -> Batch:
        saved, self.device = self.device, device
        try:
            return self.sample(n, generator)
        finally:
            self.device = saved

    def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
        yield from self.eval_set(split).split(batch_size)


@register
class BitMemory(_SyntheticTask):
    """Five random +-1 strings, then a copy of one of them with each bit zeroed with
    probability `mask_prob`; predict the original string. The 6 x n_bits input is cut into
    patches of `patch` bits (tokens); the last n_bits/patch tokens (the masked copy) answer,
    each with `patch` bits of 2 logits."""

    name = "bit_memory"
    label = "Bit Memory"
    paper_order = 0
    defaults = {
        **_SyntheticTask.defaults,
        "n_bits": 1000,
        "n_strings": 5,
        "patch": 50,
        "mask_prob": 0.5,
    }

    def setup(self) -> None:
        super().setup()
        self.input, self.head = self.shapes(self.options)
        self.n_bits, self.patch, self.n_strings = (
            int(self.options[k]) for k in ("n_bits", "patch", "n_strings")
        )

    @classmethod
    def shapes(cls, options: dict[str, Any] | None = None) -> tuple[InputSpec, HeadSpec]:
        opts = cls.options_of(options)
        n_bits, patch, n_strings = (int(opts[k]) for k in ("n_bits", "patch", "n_strings"))
        if n_bits % patch:
            raise ValueError(f"bit_memory: n_bits={n_bits} is not a multiple of patch={patch}")
        per_string = n_bits // patch
        return (
            InputSpec("continuous", patch, (n_strings + 1) * per_string),
            HeadSpec(n_answer_tokens=per_string, outputs_per_token=patch, n_classes=2),
        )

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        dev = self.device
        bits = torch.randint(
            0, 2, (n, self.n_strings, self.n_bits), generator=generator, device=dev
        )
        which = torch.randint(0, self.n_strings, (n,), generator=generator, device=dev)
        target = bits[torch.arange(n, device=dev), which]  # (n, n_bits) in {0, 1}
        keep = torch.rand((n, self.n_bits), generator=generator, device=dev) >= float(
            self.options["mask_prob"]
        )
        signs = bits.float() * 2 - 1
        query = (target.float() * 2 - 1) * keep
        x = torch.cat([signs, query[:, None]], dim=1).reshape(n, -1, self.patch)
        return Batch(x, target)


@register
class BitXOR(_SyntheticTask):
    """Two random `n_bits`-bit strings, one bit per token; the second string's tokens each
    predict the XOR of their bit with the bit at the same position of the first string."""

    name = "bit_xor"
    label = "Bit XOR"
    paper_order = 1
    defaults = {**_SyntheticTask.defaults, "n_bits": 5}

    def setup(self) -> None:
        super().setup()
        self.n_bits = int(self.options["n_bits"])
        self.input, self.head = self.shapes(self.options)

    @classmethod
    def shapes(cls, options: dict[str, Any] | None = None) -> tuple[InputSpec, HeadSpec]:
        n_bits = int(cls.options_of(options)["n_bits"])
        return (
            InputSpec("continuous", 1, 2 * n_bits),
            HeadSpec(n_answer_tokens=n_bits, outputs_per_token=1, n_classes=2),
        )

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        bits = torch.randint(0, 2, (n, 2, self.n_bits), generator=generator, device=self.device)
        y = bits[:, 0] ^ bits[:, 1]
        return Batch(bits.reshape(n, 2 * self.n_bits, 1).float(), y)
