"""Writing result files so that a crash, a kill or a full disk never leaves a file that
looks finished: every file is written to a temporary name in its own folder, flushed to
disk, then renamed over the real name (atomic on POSIX file systems). If the write fails,
the temporary file is removed and the old file, if any, is left as it was.

A full disk (ENOSPC) or an exhausted quota (EDQUOT) raises `DiskFull`, which names the file,
the free space and the fix; nothing is left behind, and a rerun continues from the last
complete checkpoint once space is back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """No space (or quota) left while writing a result file; the message says which file,
    how much space is free and what to do."""


def _free(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**20:.0f} MiB free"
    except OSError:
        return "free space unknown"


def disk_full(path: Path, exc: OSError) -> DiskFull:
    """The error for a full disk while writing `path`."""
    return DiskFull(
        exc.errno,
        f"no space left on the device writing {path} ({os.strerror(exc.errno)}; "
        f"{_free(path.parent)} on its file system). Nothing was half-written: the previous "
        "file, if any, is intact. Free space or point results_dir/figures_dir elsewhere, "
        "then run the same command again (training resumes from its last checkpoint)",
    )


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """`with atomic_path(p) as tmp:` write the file `tmp`; on leaving the block it is
    fsynced and renamed to `p`. On any exception it is removed and `p` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _FULL and not isinstance(exc, DiskFull):
            raise disk_full(path, exc) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """`data` to `path`, atomically (see atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()


def write_text(path: str | Path, text: str) -> None:
    """`text` (UTF-8) to `path`, atomically (see atomic_path)."""
    write_bytes(path, text.encode("utf-8"))


def write_with(path: str | Path, writer: Callable[[Path], object]) -> None:
    """`writer(tmp)` writes the file; it lands at `path` atomically (see atomic_path). For
    writers that take a file name (pyarrow, pandas, matplotlib, numpy)."""
    with atomic_path(path) as tmp:
        writer(tmp)
