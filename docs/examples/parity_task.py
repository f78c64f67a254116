"""An example task: the parity of 4 bits, one bit per token.

Copy this file, rename the task, and list the module in the config's `task_modules`.
How to run it: docs/extending.md. `tests/test_toy_task.py` trains and tabulates this file.

The data is `data/toy-parity-bits/bits.txt`. `fetch_bits` writes it; a real task would
download its files there instead.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from fpt import data as fdata
from fpt.data import download as dl
from fpt.tasks import Batch, HeadSpec, InputSpec, Task, register

N_BITS, N_EXAMPLES = 4, 320


def fetch_bits(data_dir: Path) -> Path:
    """Stands in for a download: writes the file, then the marker with its SHA-256."""
    path = data_dir / BITS.folder / "bits.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    path.write_text("".join(f"{rng.getrandbits(N_BITS):04b}\n" for _ in range(N_EXAMPLES)))
    return dl.write_marker(BITS.name, data_dir, {dl.relpath(path, data_dir): dl.sha256sum(path)})


# The dataset: its name (`fpt fetch-data toy_parity_bits`), its folder under data_dir,
# the function that fetches it, and how messages name it.
BITS = fdata.DatasetInfo("toy_parity_bits", "toy-parity-bits", fetch_bits, "toy parity bits")


@register
class Parity(Task):
    name = "toy_parity"  # the config's task value
    label = "Toy parity"  # its column title in tables and figures
    datasets = (BITS,)

    @classmethod
    def shapes(cls, options=None):
        # N_BITS tokens of 1 feature each; the head reads the last token: 1 label, 2 classes
        return InputSpec("continuous", 1, N_BITS), HeadSpec(1, 1, 2)

    def setup(self):
        super().setup()
        self.input, self.head = self.shapes(self.options)
        path = self.data_dir / BITS.folder / "bits.txt"
        if not path.is_file():
            raise fdata.missing(self.name, path, BITS.name, self.data_dir)
        bits = torch.tensor([[int(c) for c in w] for w in path.read_text().split()])
        x = (bits.float() * 2 - 1)[:, :, None].to(self.device)
        y = (bits.sum(1, keepdim=True) % 2).to(self.device)
        self.sets = {
            "train": (x[:256], y[:256]),
            "val": (x[256:288], y[256:288]),
            "test": (x[288:], y[288:]),
        }

    def train_batch(self, batch_size, generator):
        x, y = self.sets["train"]
        i = torch.randint(len(x), (batch_size,), generator=generator, device=generator.device)
        return Batch(x[i.to(x.device)], y[i.to(x.device)])

    def eval_batches(self, split, batch_size):
        yield from Batch(*self.sets[split]).split(batch_size)
