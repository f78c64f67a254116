"""Dataset downloads: `fpt fetch-data DATASET --data-dir DIR` (Snakemake rules fetch_<dataset>,
run on the submit host as localrules since compute nodes often have no internet).

Each download goes to `<file>.partial` and resumes there: an interrupted transfer (connection
cut, reset or timed out) is retried up to `RETRIES` times with a short backoff, each time asking
the server for the rest with `Range: bytes=<size of the partial>-` (a later `fpt fetch-data`
resumes the same way). A `206` reply is appended; a server that ignores ranges (`200`) makes
the download start over; `416` means the partial is already whole, which is accepted only when
its size equals the announced total. Only when the whole body has arrived and its checksum
matched is the partial renamed to the final name; a checksum mismatch deletes the partial and
raises `ChecksumError` (file, expected and actual digest, what to do). The dataset's
`.complete` marker is written last and records the SHA-256 of every file downloaded (and of
ListOps' extracted TSVs), so later runs can verify data for which no checksum is published.
Files already present and valid are not downloaded again, so data placed by hand (e.g. an
existing torchvision folder) is adopted. Progress goes to stderr: a tqdm bar on a terminal,
else a log line every ~10%.

Published checksums: none of the sources publishes a SHA-256; the MD5s below are the only
published ones and are what is checked.

| dataset  | source | check |
|---|---|---|
| mnist    | torchvision's mirrors of the four idx .gz files | torchvision's md5 per file |
| cifar10  | https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (~163 MiB) | md5 c58f30108f718f92721af3b95e74349a (published on that page), then each batch's md5 (torchvision) |
| listops  | https://storage.googleapis.com/long-range-arena/lra_release.gz (a tar.gz, ~7.7 GB) | no published checksum: Content-Length, tar integrity, TSV headers; the SHA-256 of the archive and of the TSVs is recorded in the marker and checked by later runs; only `listops-1000/` is extracted, the archive is then deleted |
| homology | http://s3.amazonaws.com/songlabdata/proteindata/data_pytorch/remote_homology.tar.gz | md5 1d687bdeb9e3866f77504d6079eed00a (the one TorchDrug and PEER check for this URL; TAPE itself publishes none), then every split's LMDB opens |
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import ssl
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fpt.data import DATASETS, fetch_hint

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
# No checksum is published for the LRA release (neither by the LRA repository nor by the
# bucket): the SHA-256 of what was downloaded is recorded in listops-1000/.complete instead.
LRA_MD5 = None
HOMOLOGY_URL = "http://s3.amazonaws.com/songlabdata/proteindata/data_pytorch/remote_homology.tar.gz"
HOMOLOGY_MD5 = "1d687bdeb9e3866f77504d6079eed00a"  # TorchDrug / PEER; TAPE publishes none
HOMOLOGY_SPLITS = (
    "train",
    "valid",
    "test_fold_holdout",
    "test_superfamily_holdout",
    "test_family_holdout",
)


RETRIES = 5  # further attempts after a cut connection, each resuming the partial file
BACKOFF_S = 1.0  # sleep before retry n is BACKOFF_S * 2**(n-1), at most 30 s
CHUNK = 1 << 18

# What a cut or stalled connection raises part-way (http.client.IncompleteRead and
# RemoteDisconnected included); these are retried, resuming the partial file.
_TRANSIENT = (
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ssl.SSLError,
    urllib.error.URLError,
)


class ChecksumError(ValueError):
    """The downloaded bytes do not match the expected checksum (the partial is deleted)."""


class DownloadError(RuntimeError):
    """The download could not be completed within the retries (the partial is kept)."""


def file_digests(path: Path, algos=("sha256",), chunk: int = 1 << 20) -> dict[str, str]:
    """Hex digests of a file, all algorithms in one pass."""
    hs = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        while block := f.read(chunk):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    return file_digests(path, ("md5",), chunk)["md5"]


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    return file_digests(path, ("sha256",), chunk)["sha256"]


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


class Progress:
    """Bytes received for one file: a tqdm bar (unit B, scaled) on stderr when it is a
    terminal (or `bar=True`), else a log line on stderr every ~10% (every 100 MiB when the
    total is unknown); `callback(done, total)` is called after every chunk."""

    def __init__(
        self,
        name: str,
        total: int | None,
        initial: int = 0,
        bar: bool | None = None,
        callback: Callable[[int, int | None], None] | None = None,
    ):
        self.name, self.total, self.done, self.callback = name, total, initial, callback
        if bar is None:
            bar = sys.stderr.isatty()
        self.bar = None
        if bar:
            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        else:
            start = f"resuming at {_mib(initial)}" if initial else "starting"
            print(f"{name}: {start} of {_mib(total)}", file=sys.stderr, flush=True)
        self._next = self._step(initial)
        if callback is not None:
            callback(initial, total)

    def _step(self, done: int) -> int:
        if self.total:
            tenth = max(self.total // 10, 1)
            return (done // tenth + 1) * tenth
        return (done // (100 << 20) + 1) * (100 << 20)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.done >= self._next:
            pct = f" ({100 * self.done // self.total}%)" if self.total else ""
            print(f"{self.name}: {_mib(self.done)} of {_mib(self.total)}{pct}", file=sys.stderr)
            self._next = self._step(self.done)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) from `bytes 100-199/200` or `bytes */200`; None where absent."""
    if not value or not value.startswith("bytes "):
        return None, None
    span, _, total = value[len("bytes ") :].partition("/")
    first = span.partition("-")[0]
    return (
        int(first) if first.strip().isdigit() else None,
        int(total) if total.strip().isdigit() else None,
    )


def _fetch_once(
    url: str,
    part: Path,
    timeout: float,
    total: int | None,
    progress: bool | None,
    on_progress: Callable[[int, int | None], None] | None,
) -> tuple[bool, int | None]:
    """One request for the rest of `part`. Returns (complete, total); raises what a cut
    connection raises. The partial file keeps everything received."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "fpt-fetch-data"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        r = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:
            raise
        exc.close()
        announced = _content_range(exc.headers.get("Content-Range"))[1]
        total = announced if announced is not None else total
        if total is not None and offset == total:  # the partial already holds everything
            return True, total
        print(f"{part}: {offset} bytes but the file has {total}; starting over", file=sys.stderr)
        part.unlink()
        return False, total
    with r:
        status = getattr(r, "status", None) or 200  # None for file:// URLs
        length = r.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            first, announced = _content_range(r.headers.get("Content-Range"))
            if first != offset:  # not the range asked for: start over
                part.unlink()
                return False, total
            total = (
                announced
                if announced is not None
                else (offset + length if length is not None else total)
            )
            mode = "ab"
        else:  # 200: the server sent the whole file (ranges ignored or none asked)
            if offset:
                print(f"{url}: the server ignores ranges; starting over", file=sys.stderr)
            offset, mode = 0, "wb"
            total = length if length is not None else total
        bar = Progress(part.name[: -len(".partial")], total, offset, progress, on_progress)
        # read1: whatever has arrived, so a timeout loses no bytes already received
        read = getattr(r, "read1", r.read)
        try:
            with open(part, mode) as f:
                while block := read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
        finally:
            bar.close()
    got = part.stat().st_size
    if total is None:
        return True, got  # nothing announced: a clean end of the body is all there is
    if got > total:
        print(
            f"{part}: {got} bytes, more than the {total} announced; starting over", file=sys.stderr
        )
        part.unlink()
        return False, total
    if got < total:  # closed early without an error
        raise http.client.IncompleteRead(b"", total - got)
    return True, total


def _download(
    url: str,
    dest: Path,
    md5: str | None = None,
    timeout: float = 60,
    *,
    sha256: str | None = None,
    retries: int | None = None,
    backoff: float | None = None,
    progress: bool | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    hint: str | None = None,
) -> tuple[Path, str]:
    """`download`, also returning the SHA-256 of the file."""
    dest = Path(dest)
    retries = RETRIES if retries is None else retries
    backoff = BACKOFF_S if backoff is None else backoff
    if dest.exists():
        have = file_digests(dest, ("md5", "sha256") if md5 else ("sha256",))
        if (md5 is None or have["md5"] == md5) and (sha256 is None or have["sha256"] == sha256):
            return dest, have["sha256"]
        print(f"{dest}: does not match its checksum; downloading it again", file=sys.stderr)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".partial")
    print(f"downloading {url} -> {dest}", file=sys.stderr)
    total, attempt, restarts = None, 0, 0
    while True:
        try:
            complete, total = _fetch_once(url, part, timeout, total, progress, on_progress)
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt >= retries:
                raise DownloadError(
                    f"{url}: HTTP {exc.code} {exc.reason} (downloading {dest})"
                    + (f". {hint}" if hint else "")
                ) from exc
            problem = f"HTTP {exc.code}"
        except _TRANSIENT as exc:
            if attempt >= retries:
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"{url}: download interrupted ({type(exc).__name__}: {exc}) "
                    f"{retries + 1} times; {have} of {total if total is not None else '?'} "
                    f"bytes are kept in {part}. Run the command again to resume"
                    + (f": {hint}" if hint else ".")
                ) from exc
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if complete:
                break
            restarts += 1  # the partial was discarded; not a network failure
            if restarts > retries:
                raise DownloadError(f"{url}: could not get a consistent copy into {part}")
            continue
        attempt += 1
        wait = min(backoff * 2 ** (attempt - 1), 30.0)
        have = part.stat().st_size if part.exists() else 0
        print(
            f"{url}: {problem} after {have} bytes; retry {attempt}/{retries} in {wait:.1f}s",
            file=sys.stderr,
        )
        time.sleep(wait)
    digests = file_digests(part, ("md5", "sha256") if md5 else ("sha256",))
    for algo, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and digests[algo] != expected.lower():
            part.unlink()
            raise ChecksumError(
                f"{dest}: the {algo} of the download from {url} is {digests[algo]}, expected "
                f"{expected} (SHA-256 of what arrived: {digests['sha256']}). The partial "
                "download was deleted; run the command again to download it afresh"
                + (f": {hint}" if hint else "")
                + ". If it keeps failing, the file at the source has changed."
            )
    os.replace(part, dest)
    return dest, digests["sha256"]


def download(
    url: str, dest: Path, md5: str | None = None, timeout: float = 60, **options: Any
) -> Path:
    """Download `url` to `dest` via `dest.partial`, resuming a partial file with HTTP range
    requests and retrying a cut connection `retries` times (default `RETRIES`, backoff
    `BACKOFF_S`); `dest` appears only once all bytes arrived and the md5 / sha256 (when
    given) match, else `ChecksumError`. A valid existing `dest` is kept. `timeout` (seconds)
    bounds each connect and each read. `progress`: tqdm bar (True), log lines (False) or
    auto (None: a bar when stderr is a terminal); `on_progress(done, total)` is called per
    chunk. `hint` (e.g. the fetch command) is appended to error messages.
    `options`: `_download`'s keywords (sha256, retries, backoff, progress, on_progress,
    hint); `_download` also returns the file's SHA-256."""
    return _download(url, dest, md5, timeout, **options)[0]


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


def recorded_sha256(dataset: str, data_dir: Path) -> dict[str, str]:
    """{path relative to data_dir: SHA-256} as recorded in the dataset's `.complete` marker
    (lines after the first are in `sha256sum` format, so `sha256sum -c` can check them from
    the data dir); empty when there is no marker or it records none."""
    marker = DATASETS[dataset].marker(data_dir)
    if not marker.is_file():
        return {}
    out = {}
    for line in marker.read_text().splitlines()[1:]:
        digest, sep, name = line.partition("  ")
        if sep and len(digest) == 64:
            out[name] = digest
    return out


def _mark(dataset: str, data_dir: Path, sha256: dict[str, str] | None = None) -> Path:
    """Write the marker last: `ok`, then the SHA-256 of each file downloaded (kept from an
    earlier marker where this run downloaded nothing new)."""
    marker = DATASETS[dataset].marker(data_dir)
    digests = {**recorded_sha256(dataset, data_dir), **(sha256 or {})}
    marker.parent.mkdir(parents=True, exist_ok=True)
    part = marker.with_name(marker.name + ".partial")
    part.write_text("ok\n" + "".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))
    os.replace(part, marker)
    return marker


def _rel(path: Path, data_dir: Path) -> str:
    return path.relative_to(data_dir).as_posix()


def fetch_mnist(data_dir: Path) -> Path:
    raw = data_dir / DATASETS["mnist"].folder / "raw"
    hint = fetch_hint("mnist", data_dir)
    digests = {}
    for name, md5 in MNIST_FILES.items():
        gz = raw / name
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                _, digests[_rel(gz, data_dir)] = _download(mirror + name, gz, md5, hint=hint)
                break
            except Exception as exc:  # next mirror (a bad copy included)
                errors.append(f"{mirror}: {exc}")
        else:
            raise RuntimeError(f"could not download {name}: " + "; ".join(errors))
        plain = raw / name[: -len(".gz")]
        if not plain.exists():  # torchvision keeps both the .gz and the unpacked file
            part = plain.with_name(plain.name + ".partial")
            with gzip.open(gz, "rb") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(part, plain)
    return _mark("mnist", data_dir, digests)


def fetch_cifar10(data_dir: Path) -> Path:
    folder = data_dir / DATASETS["cifar10"].folder
    digests = {}

    def valid() -> bool:
        return all(
            (folder / n).is_file() and md5sum(folder / n) == m for n, m in CIFAR10_FILES.items()
        )

    if not valid():
        archive, sha = _download(
            CIFAR10_URL,
            data_dir / "cifar-10-python.tar.gz",
            CIFAR10_MD5,
            hint=fetch_hint("cifar10", data_dir),
        )
        digests[_rel(archive, data_dir)] = sha
        _extract(archive, data_dir)
        if not valid():
            raise ValueError(
                f"{folder}: batch files do not match torchvision's md5s after extraction"
            )
    return _mark("cifar10", data_dir, digests)


def fetch_listops(data_dir: Path, keep_archive: bool = False) -> Path:
    """No checksum is published for the LRA release: the first download records the SHA-256
    of the archive and of the three TSVs in the marker; later runs check the TSVs against it
    (fetching again on a mismatch) and a new download of the archive against the recorded
    archive digest."""
    from fpt.tasks.listops import read_tsv

    folder = data_dir / DATASETS["listops"].folder
    names = [f"basic_{s}.tsv" for s in ("train", "val", "test")]
    recorded = recorded_sha256("listops", data_dir)
    have = all((folder / n).is_file() for n in names)
    digests = {}
    if have:
        for n in names:
            key = _rel(folder / n, data_dir)
            digests[key] = sha256sum(folder / n)
            if key in recorded and recorded[key] != digests[key]:
                print(
                    f"{folder / n}: SHA-256 {digests[key]} differs from the {recorded[key]} "
                    "recorded when it was downloaded; fetching it again",
                    file=sys.stderr,
                )
                have = False
    if not have:
        archive_path = data_dir / "lra_release.tar.gz"
        archive, sha = _download(
            LRA_URL,
            archive_path,
            LRA_MD5,
            timeout=300,
            sha256=recorded.get(_rel(archive_path, data_dir)),
            hint=fetch_hint("listops", data_dir),
        )
        digests = {_rel(archive, data_dir): sha}
        tmp = data_dir / "lra_release.partial"
        got = _extract(archive, tmp, select=lambda n: "listops-1000/" in n)
        found = {Path(n).name: tmp / n for n in got}
        missing = [n for n in names if n not in found]
        if missing:
            raise ValueError(f"{archive}: no listops-1000/{missing} inside")
        folder.mkdir(parents=True, exist_ok=True)
        for n in names:
            os.replace(found[n], folder / n)
            digests[_rel(folder / n, data_dir)] = sha256sum(folder / n)
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep_archive:
            archive.unlink()
    for n in names:
        read_tsv(folder / n)  # raises on a bad file
    return _mark("listops", data_dir, digests)


def fetch_homology(data_dir: Path) -> Path:
    from fpt.tasks.homology import read_lmdb

    folder = data_dir / DATASETS["homology"].folder
    paths = [folder / f"remote_homology_{s}.lmdb" for s in HOMOLOGY_SPLITS]
    digests = {}
    if not all(p.exists() for p in paths):
        archive, sha = _download(
            HOMOLOGY_URL,
            data_dir / "remote_homology.tar.gz",
            HOMOLOGY_MD5,
            hint=fetch_hint("homology", data_dir),
        )
        digests[_rel(archive, data_dir)] = sha
        _extract(archive, data_dir)
    for p in paths:
        read_lmdb(p)  # raises on a bad file
    return _mark("homology", data_dir, digests)


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
