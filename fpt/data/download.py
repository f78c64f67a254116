"""Dataset downloads: `fpt fetch-data DATASET --data-dir DIR` (Snakemake rules fetch_<dataset>,
run on the submit host as localrules since compute nodes often have no internet).

Each download goes to `<file>.partial`, is checked (md5 where the publisher or torchvision
lists one, else the announced size and the archive's integrity) and only then renamed; the
dataset's `.complete` marker is written last. Files already present and valid are not
downloaded again, so data placed by hand (e.g. an existing torchvision folder) is adopted.

| dataset  | source | check |
|---|---|---|
| mnist    | torchvision's mirrors of the four idx .gz files | torchvision's md5 per file |
| cifar10  | https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (~163 MiB) | md5 c58f30108f718f92721af3b95e74349a, then each batch's md5 |
| listops  | https://storage.googleapis.com/long-range-arena/lra_release.gz (a tar.gz, ~7.7 GB) | no published checksum: Content-Length, tar integrity, TSV headers; only `listops-1000/` is extracted, the archive is then deleted |
| homology | http://s3.amazonaws.com/songlabdata/proteindata/data_pytorch/remote_homology.tar.gz | md5 1d687bdeb9e3866f77504d6079eed00a, then every split's LMDB opens |
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

from fpt.data import DATASETS

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
LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
HOMOLOGY_URL = "http://s3.amazonaws.com/songlabdata/proteindata/data_pytorch/remote_homology.tar.gz"
HOMOLOGY_MD5 = "1d687bdeb9e3866f77504d6079eed00a"
HOMOLOGY_SPLITS = (
    "train",
    "valid",
    "test_fold_holdout",
    "test_superfamily_holdout",
    "test_family_holdout",
)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 60) -> Path:
    """Download `url` to `dest` atomically (via dest.partial), checking the md5 if given and
    the byte count against Content-Length. A valid existing `dest` is kept."""
    dest = Path(dest)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".partial")
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    req = urllib.request.Request(url, headers={"User-Agent": "fpt-fetch-data"})
    with urllib.request.urlopen(req, timeout=timeout) as r, open(part, "wb") as f:
        expected = r.headers.get("Content-Length")
        shutil.copyfileobj(r, f, length=1 << 22)
    got = part.stat().st_size
    if expected is not None and got != int(expected):
        part.unlink()
        raise ValueError(f"{url}: received {got} bytes, expected {expected}; try again")
    if md5 is not None:
        digest = md5sum(part)
        if digest != md5:
            part.unlink()
            raise ValueError(f"{url}: md5 {digest} does not match the published {md5}")
    os.replace(part, dest)
    return dest


def _extract(archive: Path, into: Path, select=None) -> list[str]:
    """Extract (members for which select(name) is true) with tarfile's safe 'data' filter."""
    names = []
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            if select is not None and not select(member.name):
                continue
            tar.extract(member, into, filter="data")
            names.append(member.name)
    return names


def _mark(dataset: str, data_dir: Path) -> Path:
    marker = DATASETS[dataset].marker(data_dir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("ok\n")
    return marker


def fetch_mnist(data_dir: Path) -> Path:
    raw = data_dir / DATASETS["mnist"].folder / "raw"
    for name, md5 in MNIST_FILES.items():
        gz = raw / name
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                download(mirror + name, gz, md5)
                break
            except Exception as exc:  # next mirror
                errors.append(f"{mirror}: {exc}")
        else:
            raise RuntimeError(f"could not download {name}: " + "; ".join(errors))
        plain = raw / name[: -len(".gz")]
        if not plain.exists():  # torchvision keeps both the .gz and the unpacked file
            part = plain.with_name(plain.name + ".partial")
            with gzip.open(gz, "rb") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(part, plain)
    return _mark("mnist", data_dir)


def fetch_cifar10(data_dir: Path) -> Path:
    folder = data_dir / DATASETS["cifar10"].folder

    def valid() -> bool:
        return all(
            (folder / n).is_file() and md5sum(folder / n) == m for n, m in CIFAR10_FILES.items()
        )

    if not valid():
        archive = download(CIFAR10_URL, data_dir / "cifar-10-python.tar.gz", CIFAR10_MD5)
        _extract(archive, data_dir)
        if not valid():
            raise ValueError(
                f"{folder}: batch files do not match torchvision's md5s after extraction"
            )
    return _mark("cifar10", data_dir)


def fetch_listops(data_dir: Path, keep_archive: bool = False) -> Path:
    from fpt.tasks.listops import read_tsv

    folder = data_dir / DATASETS["listops"].folder
    names = [f"basic_{s}.tsv" for s in ("train", "val", "test")]
    if not all((folder / n).is_file() for n in names):
        archive = download(LRA_URL, data_dir / "lra_release.tar.gz", None, timeout=300)
        tmp = data_dir / "lra_release.partial"
        got = _extract(archive, tmp, select=lambda n: "listops-1000/" in n)
        found = {Path(n).name: tmp / n for n in got}
        missing = [n for n in names if n not in found]
        if missing:
            raise ValueError(f"{archive}: no listops-1000/{missing} inside")
        folder.mkdir(parents=True, exist_ok=True)
        for n in names:
            os.replace(found[n], folder / n)
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep_archive:
            archive.unlink()
    for n in names:
        read_tsv(folder / n)  # raises on a bad file
    return _mark("listops", data_dir)


def fetch_homology(data_dir: Path) -> Path:
    from fpt.tasks.homology import read_lmdb

    folder = data_dir / DATASETS["homology"].folder
    paths = [folder / f"remote_homology_{s}.lmdb" for s in HOMOLOGY_SPLITS]
    if not all(p.exists() for p in paths):
        archive = download(HOMOLOGY_URL, data_dir / "remote_homology.tar.gz", HOMOLOGY_MD5)
        _extract(archive, data_dir)
    for p in paths:
        read_lmdb(p)  # raises on a bad file
    return _mark("homology", data_dir)


FETCHERS = {
    "mnist": fetch_mnist,
    "cifar10": fetch_cifar10,
    "listops": fetch_listops,
    "homology": fetch_homology,
}


def fetch(dataset: str, data_dir: str | Path) -> Path:
    """Fetch one dataset into `data_dir`; returns its `.complete` marker."""
    if dataset not in FETCHERS:
        raise ValueError(f"unknown dataset {dataset!r}; one of {', '.join(FETCHERS)}")
    return FETCHERS[dataset](Path(data_dir))
