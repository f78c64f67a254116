"""Atomic, checksummed training checkpoints with one previous generation kept.

A checkpoint lives in `<run dir>/checkpoint/`, outside Snakemake's declared outputs, and
holds the run's spec: a checkpoint written for other settings, or by an fpt whose loop keeps
other state (`keys` of `load_latest`), is never resumed. A file
whose SHA-256 does not match its sidecar is treated as corrupt: we fall back to the
previous checkpoint, else start from scratch, with a warning either way.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from fpt import files

log = logging.getLogger("fpt.checkpoint")

# NEW: a checkpoint being written, renamed to CURRENT once whole.
CURRENT, PREVIOUS, NEW = "ckpt.pt", "ckpt.prev.pt", "ckpt.new.pt"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".pt.sha256")


def save(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state`; the previous checkpoint becomes ckpt.prev.pt. The new file and its
    checksum are written whole under a new name first (fpt.files: a full disk raises
    DiskFull there, leaving both existing checkpoints as they were and no partial file),
    and only then rotated in by renames, which need no space."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    cur, new = ckpt_dir / CURRENT, ckpt_dir / NEW
    try:
        files.write_bytes(new, data)
        files.write_bytes(_sidecar(new), _sha256(data).encode())
    except BaseException:
        new.unlink(missing_ok=True)
        raise
    if cur.exists():
        os.replace(cur, ckpt_dir / PREVIOUS)
        if _sidecar(cur).exists():
            os.replace(_sidecar(cur), _sidecar(ckpt_dir / PREVIOUS))
    # Sidecar first: a crash between the two renames leaves no ckpt.pt (the previous one is
    # loaded) rather than a checkpoint checked against another file's checksum.
    os.replace(_sidecar(new), _sidecar(cur))
    os.replace(new, cur)
    return cur


def _load_one(path: Path) -> dict[str, Any] | None:
    sidecar = _sidecar(path)
    if not path.exists():
        return None
    data = path.read_bytes()
    expected = sidecar.read_text().strip() if sidecar.exists() else None
    if expected != _sha256(data):
        log.warning("checkpoint %s is corrupt (checksum mismatch); ignoring it", path)
        return None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # a matching checksum over an unreadable file: still unusable
        log.warning("checkpoint %s could not be read (%s); ignoring it", path, exc)
        return None


def load_latest(
    ckpt_dir: Path, spec_json: dict[str, Any], keys: Iterable[str] = ()
) -> dict[str, Any] | None:
    """The newest intact checkpoint written for exactly `spec_json` and holding every one of
    `keys` (one written by another version of fpt may lack some: not resumed), or None."""
    for name in (CURRENT, PREVIOUS):
        state = _load_one(ckpt_dir / name)
        if state is None:
            continue
        if not isinstance(state, dict) or state.get("spec") != spec_json:
            log.warning(
                "checkpoint %s was written for other settings; not resuming from it",
                ckpt_dir / name,
            )
            continue
        missing = sorted(set(keys) - set(state))
        if missing:
            log.warning(
                "checkpoint %s lacks %s (written by another version of fpt); not resuming from it",
                ckpt_dir / name,
                ", ".join(missing),
            )
            continue
        return state
    return None
