"""Dataset downloads: `fpt fetch-data DATASET --data-dir DIR` (Snakemake rule fetch_data, one
job per dataset, run on the submit host as a localrule since compute nodes often have no
internet). `fetch` dispatches to the fetch function of the dataset as its task module
declares it (`fpt.data.DATASETS`); the pieces those functions share are here.

Each download goes to `<file>.partial` and resumes there: an interrupted transfer (connection
cut, reset or timed out) is retried up to `RETRIES` times with a short backoff, each time asking
the server for the rest with `Range: bytes=<size of the partial>-` (a later `fpt fetch-data`
resumes the same way). A `206` reply is appended; a server that ignores ranges (`200`) makes
the download start over; `416` means the partial is already whole, which is accepted only when
its size equals the announced total. Only when the whole body has arrived and its checksum
matched is the partial renamed to the final name; a checksum mismatch deletes the partial and
raises `ChecksumError` (file, expected and actual digest, what to do). The dataset's
`.complete` marker is written last (`write_marker`) and records the SHA-256 of every file
downloaded (and of ListOps' extracted TSVs), so later runs can verify data for which no
checksum is published. Files already present and valid are not downloaded again, so data
placed by hand (e.g. an existing torchvision folder) is adopted. Progress goes to stderr: a
tqdm bar on a terminal, else a log line every ~10%.

Sources and published checksums: see the module that declares each dataset
(`fpt.tasks.images`: mnist, cifar10; `fpt.tasks.listops`: listops; `fpt.tasks.homology`:
homology). None of the sources publishes a SHA-256; the MD5s there are the only published
ones and are what is checked.
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


def download_hashed(
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
    """`download`, also returning the SHA-256 of the file (for the dataset's marker)."""
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
    `options`: `download_hashed`'s keywords (sha256, retries, backoff, progress,
    on_progress, hint); `download_hashed` also returns the file's SHA-256."""
    return download_hashed(url, dest, md5, timeout, **options)[0]


def extract(archive: Path, into: Path, select=None) -> list[str]:
    """Extract (members for which select(name) is true) with tarfile's safe 'data' filter."""
    names = []
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            if select is not None and not select(member.name):
                continue
            tar.extract(member, into, filter="data")
            names.append(member.name)
    return names


def download_archive(
    url: str, name: str, md5: str | None, dataset: str, data_dir: Path
) -> dict[str, str]:
    """Download the archive `name` of `dataset` into `data_dir` (checked against `md5`),
    extract it there, and return {its path relative to data_dir: SHA-256} for the marker."""
    archive, sha = download_hashed(url, data_dir / name, md5, hint=fetch_hint(dataset, data_dir))
    extract(archive, data_dir)
    return {relpath(archive, data_dir): sha}


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


def write_marker(dataset: str, data_dir: Path, sha256: dict[str, str] | None = None) -> Path:
    """Write the marker last: `ok`, then the SHA-256 of each file downloaded (kept from an
    earlier marker where this run downloaded nothing new)."""
    marker = DATASETS[dataset].marker(data_dir)
    digests = {**recorded_sha256(dataset, data_dir), **(sha256 or {})}
    marker.parent.mkdir(parents=True, exist_ok=True)
    part = marker.with_name(marker.name + ".partial")
    part.write_text("ok\n" + "".join(f"{d}  {n}\n" for n, d in sorted(digests.items())))
    os.replace(part, marker)
    return marker


def relpath(path: Path, data_dir: Path) -> str:
    """`path` as the marker records it: relative to the data dir, with / separators."""
    return path.relative_to(data_dir).as_posix()


def gunzip(src: Path, dest: Path) -> Path:
    """Decompress `src` into `dest` via `dest.partial` (atomic)."""
    part = dest.with_name(dest.name + ".partial")
    with gzip.open(src, "rb") as fin, open(part, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    os.replace(part, dest)
    return dest


def fetch(dataset: str, data_dir: str | Path) -> Path:
    """Fetch one dataset into `data_dir` with the fetch function its task module declared;
    returns its `.complete` marker."""
    info = DATASETS.get(dataset)
    if info is None or info.fetch is None:
        known = ", ".join(sorted(n for n, d in DATASETS.items() if d.fetch is not None))
        raise ValueError(
            f"unknown dataset {dataset!r}; one of {known or '(none: import fpt.tasks first)'}. "
            "A dataset is declared by the module of the task that reads it (config key "
            "task_modules, or FPT_TASK_MODULES for fpt commands)"
        )
    return info.fetch(Path(data_dir))
