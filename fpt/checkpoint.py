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

log = logging.getLogger("fpt.checkpoint")

CURRENT, PREVIOUS = "ckpt.pt", "ckpt.prev.pt"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state`; the previous checkpoint becomes ckpt.prev.pt."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    cur = ckpt_dir / CURRENT
    if cur.exists():
        os.replace(cur, ckpt_dir / PREVIOUS)
        sidecar = cur.with_suffix(".pt.sha256")
        if sidecar.exists():
            os.replace(sidecar, (ckpt_dir / PREVIOUS).with_suffix(".pt.sha256"))
    # Sidecar first: a crash between the two writes leaves a checkpoint that fails its
    # check (and falls back to the previous one) rather than an unchecked one.
    _write(cur.with_suffix(".pt.sha256"), _sha256(data).encode())
    _write(cur, data)
    return cur


def _load_one(path: Path) -> dict[str, Any] | None:
    sidecar = path.with_suffix(".pt.sha256")
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
