"""Atomic, checksummed training checkpoints with one previous generation kept.

A checkpoint lives in `<run dir>/checkpoint/`, outside Snakemake's declared outputs, and
holds the run's spec: a checkpoint written for other settings, or by an fpt whose loop keeps
other state (`keys` of `load_latest`), is never resumed. A file
whose SHA-256 does not match its sidecar is treated as corrupt: we fall back to the
previous checkpoint, else start from scratch, with a warning either way.

Checkpoints hold tensors and plain data only (dicts, lists, tuples, str, int, float, bool,
None): `save` converts what is plain underneath (numpy scalars, str subclasses such as
torch.__version__) and refuses anything else, and loading uses torch's weights-only
unpickler, so a crafted file cannot run code when it is read. A file that holds anything
else is refused like a corrupt one (a warning, then the previous checkpoint or a fresh
start): a checkpoint only saves time, so losing it costs recomputation, never a wrong result,
and the run goes on instead of stalling until someone deletes the file; the next two saves
rotate it out.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.torch_version import TorchVersion

from fpt import files

log = logging.getLogger("fpt.checkpoint")

# NEW: a checkpoint being written, renamed to CURRENT once whole.
CURRENT, PREVIOUS, NEW = "ckpt.pt", "ckpt.prev.pt", "ckpt.new.pt"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".pt.sha256")


_LEAVES = (type(None), bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)
_BASES = (bool, int, float, str, bytes)  # a subclass of one of these is stored as it


def plain(obj: Any, where: str = "state") -> Any:
    """`obj` as torch's weights-only unpickler reads it back: tensors, dicts, lists, tuples
    and plain Python values. numpy scalars and subclasses of the plain types (rows made by an
    earlier fpt hold `torch_version` as a TorchVersion, a str subclass) become the plain
    value; anything else
    raises TypeError naming where it is, so no checkpoint is written that could not be
    resumed. ~50 ms for 1,000 evaluations' rows; tensors are not copied."""
    t = type(obj)
    if t in _LEAVES or isinstance(obj, torch.Tensor):
        return obj
    if t is dict or t is OrderedDict:
        return t((plain(k, where), plain(v, f"{where}[{k!r}]")) for k, v in obj.items())
    if t is list:
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if t is tuple or t is torch.Size:
        return t(plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    for base in _BASES:
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(
        f"checkpoint {where} is a {t.__module__}.{t.__qualname__}; a checkpoint holds only "
        "tensors and plain data (dict, list, tuple, str, int, float, bool, None)"
    )


# What checkpoints written before `plain` hold besides plain data: their rows'
# torch_version, a TorchVersion (a str subclass, built without running code). Allowed
# process-wide (add_safe_globals exists from torch 2.4, the context manager only from 2.5).
torch.serialization.add_safe_globals([TorchVersion])


def _refusal(exc: Exception) -> str | None:
    """What the weights-only unpickler refused in a checkpoint (e.g. "Trying to load
    unsupported GLOBAL posix.system ..."), or None when `exc` is another failure."""
    text = str(exc)
    if not isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" not in text:
        return None
    boiler = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    detail = " ".join(ln for ln in lines if not ln.startswith(boiler))
    return detail or "a type other than tensors and plain data"


def save(ckpt_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state`; the previous checkpoint becomes ckpt.prev.pt. The new file and its
    checksum are written whole under a new name first (fpt.files: a full disk raises
    DiskFull there, leaving both existing checkpoints as they were and no partial file),
    and only then rotated in by renames, which need no space."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(plain(state), buf)
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
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a matching checksum over an unreadable file: still unusable
        refused = _refusal(exc)
        if refused is not None:
            log.warning(
                "checkpoint %s holds something other than tensors and plain data (%s); it was "
                "not loaded, since unpickling it could run code. Ignoring it: resuming from "
                "the previous checkpoint, else from scratch",
                path,
                refused,
            )
        else:
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
