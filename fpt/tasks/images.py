"""Image tasks: MNIST, CIFAR-10, CIFAR-10 LRA ("Image"), and the offline `digits` task.

Images live on the device as uint8 tensors; patching, augmentation and normalisation run
batched there with torch ops (no torchvision: it cannot be installed beside a CPU torch
here, and we only need its on-disk layouts). Patches follow the reference code's
`rearrange(x, 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)')`: tokens in row-major patch order,
each token the patch's pixels row-major with the channels innermost.

Splits: "val" is a seeded `val_size` slice held out of the official training set (the
reference had none; model selection must not see the test set), "test" is the official test
split, evaluated whole. Training batches are drawn with replacement from the rest.
`val_size: 0` holds nothing out: the task trains on the whole training set, as the paper did
(all 60,000 MNIST / 50,000 CIFAR-10 images), and has no "val" split (`eval_splits` is then
("test",) and `has_val` is False, so it cannot drive early stopping or an lr sweep). The
default stays 5,000 (digits: 300).

Shapes (`shapes`, from the options alone): MNIST 49 tokens x 16, CIFAR-10 64 x 48
(`patch_channels: rgb`) or 64 x 16 (`gray`), CIFAR-10 LRA 1024 x 1, digits 16 x 4; one
answer token, 10 classes.

Data layouts (torchvision's, under the data dir; `fpt fetch-data mnist|cifar10`):
- MNIST: `MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte` (or the same with `.gz`).
- CIFAR-10: `cifar-10-batches-py/data_batch_{1..5}`, `test_batch` (pickles with b'data'
  (N x 3072 uint8, channel-major 32x32 planes) and b'labels'). Unpickling can run code, so
  a batch is read only when its md5 is torchvision's (or its SHA-256 the one its marker
  records), else only with `allow_unverified_pickles` acknowledged: `fpt.data.trust`.

Downloads (declared here as datasets `mnist` and `cifar10`; fpt.data.download does the
resuming, checking and marking):

| dataset  | source | check |
|---|---|---|
| mnist    | torchvision's mirrors of the four idx .gz files | torchvision's md5 per file |
| cifar10  | https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (~163 MiB) | md5 c58f30108f718f92721af3b95e74349a (published on that page), then each batch's md5 (torchvision) |
"""

from __future__ import annotations

import functools
import gzip
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fpt import data as fdata
from fpt.data import download as dl
from fpt.data import trust
from fpt.tasks.base import Batch, HeadSpec, InputSpec
from fpt.tasks.dataset import DatasetTask, Split, carve, check_size, hold_out
from fpt.tasks.registry import register

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's Grayscale (ITU-R 601-2 luma)


def patchify(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, (H/p)(W/p), p*p*C), as `b c (h p1) (w p2) -> b (h w) (p1 p2 c)`."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


@functools.cache
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`values` as a tensor on `device`, made once: building it from Python numbers copies
    them to the device, which on an accelerator waits for the work queued before it. Made
    outside inference mode, so a tensor made during an evaluation serves training too."""
    with torch.inference_mode(False):
        return torch.tensor(values, device=device, dtype=dtype)


def to_gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) floats -> (B, 1, H, W) luma."""
    w = _constant(GRAY_WEIGHTS, x.device, x.dtype)
    return (x * w[None, :, None, None]).sum(1, keepdim=True)


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    pad: int = 4,
    degrees: float = 20.0,
) -> torch.Tensor:
    """The reference's CIFAR training augmentation, batched, on floats in [0, 1] before
    normalisation (as torchvision applies it after ToTensor): RandomCrop(size, padding=pad)
    with zero fill, RandomHorizontalFlip(0.5), RandomRotation(degrees) (angle uniform in
    [-degrees, degrees], nearest neighbour, zero fill, about the centre). Every random draw
    comes from `generator`."""
    b, c, h, w = x.shape
    dev = x.device
    gdev = generator.device

    def rand(*shape):
        return torch.rand(shape, generator=generator, device=gdev).to(dev)

    # random crop of the zero-padded image
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=gdev).to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=gdev).to(dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (b, h, 1)
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # (b, 1, w)
    bi = torch.arange(b, device=dev)[:, None, None]
    x = xp.permute(0, 2, 3, 1)[bi, rows, cols].permute(0, 3, 1, 2)  # (b, c, h, w)
    # horizontal flip
    flip = rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    # rotation
    theta = (rand(b) * 2 - 1) * math.radians(degrees)
    cos, sin = theta.cos(), theta.sin()
    zero = torch.zeros_like(cos)
    mat = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(mat.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------- downloads

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = {  # torchvision.datasets.MNIST.resources
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FILES = {  # torchvision.datasets.CIFAR10.train_list + test_list
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def fetch_mnist(data_dir: Path) -> Path:
    raw = data_dir / MNIST_DATA.folder / "raw"
    hint = fdata.fetch_hint("mnist", data_dir)
    digests = {}
    for name, md5 in MNIST_FILES.items():
        gz = raw / name
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                _, digests[dl.relpath(gz, data_dir)] = dl.download_hashed(
                    mirror + name, gz, md5, hint=hint
                )
                break
            except Exception as exc:  # next mirror (a bad copy included)
                errors.append(f"{mirror}: {exc}")
        else:
            raise RuntimeError(f"could not download {name}: " + "; ".join(errors))
        plain = raw / name[: -len(".gz")]
        if not plain.exists():  # torchvision keeps both the .gz and the unpacked file
            dl.gunzip(gz, plain)
    return dl.write_marker("mnist", data_dir, digests)


def fetch_cifar10(data_dir: Path) -> Path:
    """The batches, each checked against torchvision's md5 (a torchvision folder already
    there is adopted when every batch matches); the marker records the archive's and each
    batch's SHA-256."""
    folder = data_dir / CIFAR10_DATA.folder
    digests = {}

    def valid() -> bool:
        for n, m in CIFAR10_FILES.items():
            if not (folder / n).is_file():
                return False
            d = dl.file_digests(folder / n, ("md5", "sha256"))
            if d["md5"] != m:
                return False
            digests[dl.relpath(folder / n, data_dir)] = d["sha256"]
        return True

    if not valid():
        digests.update(
            dl.download_archive(
                CIFAR10_URL, "cifar-10-python.tar.gz", CIFAR10_MD5, "cifar10", data_dir
            )
        )
        if not valid():
            raise ValueError(
                f"{folder}: batch files do not match torchvision's md5s after extraction"
            )
    return dl.write_marker("cifar10", data_dir, digests)


MNIST_DATA = fdata.DatasetInfo(
    "mnist", "MNIST", fetch_mnist, "MNIST idx files from torchvision's mirrors, md5-checked"
)
CIFAR10_DATA = fdata.DatasetInfo(
    "cifar10",
    "cifar-10-batches-py",
    fetch_cifar10,
    "CIFAR-10 python pickles, md5-checked (tasks cifar10 and cifar10_lra)",
)


# ---------------------------------------------------------------- readers (torchvision layouts)

_IDX_MAGIC = {3: 2051, 1: 2049}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An MNIST idx file (ubyte; plain or .gz): images (N, 28, 28) or labels (N,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 + 4 * ndim:
        raise ValueError("file too short for an idx header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise ValueError(f"idx magic number {magic}, expected {_IDX_MAGIC[ndim]}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise ValueError(f"idx body has {body.size} bytes, header says {dims}")
    return body.reshape(dims).copy()  # writable, owned by numpy


def _find(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / f"{name}.gz"):
        if cand.is_file():
            return cand
    return None


def load_mnist(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    raw = data_dir / MNIST_DATA.folder / "raw"
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
        name = f"{prefix}-{kind}-ubyte"
        path = _find(raw, name)
        if path is None:
            raise fdata.missing("mnist", raw / name, "mnist", data_dir)
        try:
            arrays.append(read_idx(path, ndim))
        except (ValueError, OSError, EOFError) as exc:
            raise fdata.corrupt("mnist", path, str(exc), "mnist", data_dir) from None
    images, labels = arrays
    if len(images) != len(labels):
        raise fdata.corrupt(
            "mnist", raw, f"{len(images)} images but {len(labels)} labels", "mnist", data_dir
        )
    return images[:, None], labels.astype(np.int64)  # (N, 1, 28, 28)


def load_cifar10(
    data_dir: Path, split: str, task: str = "cifar10"
) -> tuple[np.ndarray, np.ndarray]:
    folder = data_dir / CIFAR10_DATA.folder
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise fdata.missing(task, path, "cifar10", data_dir)
        raw = path.read_bytes()
        # a pickle: unpickled only once verified (fpt.data.trust), from the bytes checked
        trust.check(task, "cifar10", data_dir, path, raw, CIFAR10_FILES.get(name))
        try:
            d = pickle.loads(raw, encoding="bytes")
            d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
            x = np.asarray(d["data"], dtype=np.uint8)
            y = np.asarray(d["labels"], dtype=np.int64)
            if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
                raise ValueError(f"data {x.shape}, {len(y)} labels")
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError, OSError) as exc:
            raise fdata.corrupt(
                task, path, f"{type(exc).__name__}: {exc}", "cifar10", data_dir
            ) from None
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------- tasks


class ImageTask(DatasetTask):
    """Official train/test files -> train/val/test splits of uint8 (N, C, H, W) on the device.
    Subclasses set `patch` and `image_size`, say how many channels a token carries
    (`channels`), load the arrays, and define `pixels`."""

    defaults = {**DatasetTask.defaults, "val_size": 5000, "augment": True}
    patch: int
    image_size: int  # side of the (square) stored image, in pixels
    n_classes = 10

    def setup(self) -> None:
        super().setup()
        self.input, self.head = self.shapes(self.options)

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        """Channels per pixel in a token (after any grayscale conversion)."""
        return 1

    @classmethod
    def shapes(cls, options: dict[str, Any] | None = None) -> tuple[InputSpec, HeadSpec]:
        opts = cls.options_of(options)
        side = cls.image_size // cls.patch
        dim = cls.patch * cls.patch * cls.channels(opts)
        return (
            InputSpec("continuous", dim, side * side),
            HeadSpec(n_answer_tokens=1, outputs_per_token=1, n_classes=cls.n_classes),
        )

    @classmethod
    def has_val(cls, options: dict[str, Any] | None = None) -> bool:
        return check_size(cls.name, "val_size", cls.options_of(options)["val_size"]) > 0

    # the official files' sizes (train, test); the val split is held out of train
    published_sizes: tuple[int, int]

    @classmethod
    def published_split_sizes(cls, options: dict[str, Any] | None = None) -> dict[str, int | None]:
        train, test = cls.published_sizes
        val = int(cls.options_of(options)["val_size"])
        return {"train": train - val, **({"val": val} if val else {}), "test": test}

    @property
    def token_dim(self) -> int:
        return self.input.dim

    def _setup(self, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]):
        tr = Split(torch.from_numpy(np.ascontiguousarray(train[0])), torch.from_numpy(train[1]))
        _, _, h, w = tr.x.shape
        if (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.name}: the training images are {h}x{w}, expected "
                f"{self.image_size}x{self.image_size}"
            )
        rest, held = hold_out(
            self.name, len(tr), self.options["val_size"], int(self.options["data_seed"])
        )
        te = Split(torch.from_numpy(np.ascontiguousarray(test[0])), torch.from_numpy(test[1]))
        if held is None:  # val_size 0: train on the whole training set, no val split
            self.splits = {"train": tr, "test": te}
            self.eval_splits = tuple(s for s in self.eval_splits if s != "val")
        else:
            self.splits = {"train": tr.take(rest), "val": tr.take(held), "test": te}
        self._to_device()

    def pixels(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised floats (B, C', H, W)."""
        raise NotImplementedError

    def to_batch(self, s: Split, generator: torch.Generator | None) -> Batch:
        return Batch(patchify(self.pixels(s.x, generator), self.patch), s.y[:, None])


@register
class MNIST(ImageTask):
    """MNIST, 4x4 patches of the 28x28 image: 49 tokens x 16 (the reference code; the paper's
    text says 64 tokens of a 32x32 image). Pixels in [0, 1] (the reference normalises with
    mean 0, std 1), no augmentation."""

    name = "mnist"
    label = "MNIST"
    paper_order = 3
    datasets = (MNIST_DATA,)
    patch = 4
    image_size = 28
    published_sizes = (60000, 10000)

    def setup(self) -> None:
        super().setup()
        d = self.data_dir
        self._setup(load_mnist(d, "train"), load_mnist(d, "test"))

    def pixels(self, x, generator):
        return x.float() / 255.0


PATCH_CHANNELS = ("rgb", "gray")


@register
class CIFAR10(ImageTask):
    """CIFAR-10, 4x4 patches: 64 tokens.

    `patch_channels`: `rgb` (default) keeps the colour channels, 4*4*3 = 48 features per
    token, which is what the reference code feeds the model (and what its numbers come
    from); `gray` converts to grayscale first, 4*4 = 16 features, the 64 x 16 the paper's
    text states. The default follows the code because the paper's results were produced by
    it; `gray` is there to test the text's version.

    Training augmentation (`augment`, default on) as in the reference: random crop 32 with
    padding 4, horizontal flip, rotation up to 20 degrees, then normalisation with mean
    (0.4914, 0.4822, 0.4465), std (0.2023, 0.1994, 0.2010) (`gray`: 0.5 / 0.5, as LRA).
    Evaluation images are only normalised."""

    name = "cifar10"
    label = "CIFAR-10"
    paper_order = 4
    datasets = (CIFAR10_DATA,)
    patch = 4
    image_size = 32
    published_sizes = (50000, 10000)
    defaults = {**ImageTask.defaults, "patch_channels": "rgb"}

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        pc = options["patch_channels"]
        if pc not in PATCH_CHANNELS:
            raise ValueError(f"{cls.name}: patch_channels={pc!r}; use one of {PATCH_CHANNELS}")
        return 1 if pc == "gray" else 3

    def setup(self) -> None:
        super().setup()
        self.gray = self.options["patch_channels"] == "gray"
        d = self.data_dir
        self._setup(load_cifar10(d, "train", self.name), load_cifar10(d, "test", self.name))

    @property
    def augments(self) -> bool:
        return bool(self.options["augment"])

    def pixels(self, x, generator):
        x = x.float() / 255.0
        if self.gray:
            x = to_gray(x)
        if generator is not None and self.options["augment"]:
            x = augment(x, generator)
        if self.gray:
            return (x - 0.5) / 0.5
        mean = _constant(CIFAR_MEAN, x.device, torch.float32)[None, :, None, None]
        std = _constant(CIFAR_STD, x.device, torch.float32)[None, :, None, None]
        return (x - mean) / std


@register
class CIFAR10LRA(CIFAR10):
    """LRA's "Image" task: CIFAR-10 in grayscale, one pixel per token, 1024 tokens x 1.
    The reference's augmentation (crop/flip/rotate as for CIFAR-10, on the grayscale image)
    and normalisation 0.5 / 0.5."""

    name = "cifar10_lra"
    label = "C10 LRA"
    paper_order = 5
    datasets = (CIFAR10_DATA,)
    patch = 1
    defaults = {**ImageTask.defaults, "patch_channels": "gray"}

    @classmethod
    def channels(cls, options: dict[str, Any]) -> int:
        if options.get("patch_channels", "gray") != "gray":
            raise ValueError("cifar10_lra is grayscale by definition; drop patch_channels")
        return 1


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits file, read as sklearn.datasets.load_digits reads it, without
    importing scikit-learn (2-3 s per run, most of a short demo run's start-up)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = (
        Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        if spec and spec.submodule_search_locations
        else None
    )
    if path is None or not path.exists():
        raise FileNotFoundError(
            "the digits task reads scikit-learn's bundled digits.csv.gz; install scikit-learn "
            "(pip install scikit-learn)"
        )
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


@register
class Digits(ImageTask):
    """Offline image task: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10
    classes; `load_digits` reads a file shipped inside scikit-learn, no download). 2x2 patches
    -> 16 tokens x 4 features, pixel values 0..16 scaled to [0, 1], no augmentation. Seeded
    split (`data_seed`): `val_size` 300 and `test_size` 300 held out, 1,197 for training
    (`val_size: 0`: 1,497 for training and no val split)."""

    name = "digits"
    label = "Digits (offline)"
    patch = 2
    image_size = 8
    defaults = {**ImageTask.defaults, "val_size": 300, "test_size": 300, "augment": False}

    @classmethod
    def published_split_sizes(cls, options: dict[str, Any] | None = None) -> dict[str, int | None]:
        opts = cls.options_of(options)  # 1,797 images, val and test held out
        test, val = int(opts["test_size"]), int(opts["val_size"])
        return {"train": 1797 - test - val, **({"val": val} if val else {}), "test": test}

    def setup(self) -> None:
        super().setup()
        images, target = _load_digits()
        x = (images.astype(np.float32) * (255.0 / 16.0)).round().astype(np.uint8)[:, None]
        y = target.astype(np.int64)
        rest, held = carve(
            len(y), int(self.options["test_size"]), int(self.options["data_seed"]) + 1
        )
        self._setup((x[rest.numpy()], y[rest.numpy()]), (x[held.numpy()], y[held.numpy()]))

    def pixels(self, x, generator):
        return x.float() / 255.0
