"""Random images in the real on-disk layouts, so image tasks can be benchmarked without a
download (`fpt bench --fake-data`). Speed does not depend on pixels.

CIFAR-10 batches are pickles, which fpt reads only when verified (fpt.data.trust): these
are written here, so they are recorded as a verified fetch records them, their SHA-256s in
the dataset's marker."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from fpt.data import download as dl
from fpt.tasks.images import CIFAR10_DATA


def fake_data_dir(task: str, root: Path, n_train: int = 512, n_test: int = 256) -> Path:
    """Random images in the real on-disk layouts (CIFAR-10 pickles, MNIST idx) under `root`,
    so image tasks can be benchmarked without a download. Speed does not depend on pixels."""
    rng = np.random.default_rng(0)
    if task in ("cifar10", "cifar10_lra"):
        d = root / CIFAR10_DATA.folder
        d.mkdir(parents=True, exist_ok=True)
        per = -(-n_train // 5)
        digests = {}
        for name, n in [*((f"data_batch_{i}", per) for i in range(1, 6)), ("test_batch", n_test)]:
            batch = {
                b"labels": [int(v) for v in rng.integers(0, 10, n)],
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            }
            with open(d / name, "wb") as f:
                pickle.dump(batch, f)
            digests[dl.relpath(d / name, root)] = dl.sha256sum(d / name)
        dl.write_marker(CIFAR10_DATA.name, root, digests)  # our own files: as fetched
    elif task == "mnist":
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", n_train), ("t10k", n_test)):
            head = (2051).to_bytes(4, "big") + b"".join(x.to_bytes(4, "big") for x in (n, 28, 28))
            (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
                head + rng.integers(0, 256, (n, 28, 28), dtype=np.uint8).tobytes()
            )
            labels = (np.arange(n) % 10).astype(np.uint8).tobytes()
            (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
                (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + labels
            )
    else:
        raise ValueError(f"no fake data for task {task!r}; fake data exists for cifar10, mnist")
    return root
