"""Pretrained weights: where a family's weights are found (the weights dir, a pip package, the
Hugging Face cache or the hub), loading them with `from_pretrained`, and fetching them into
the weights dir. Every failure is a BackboneUnavailable whose message says how to fix it
(the family's `how_to_get`, fpt.models.families).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from fpt.models.families import family, size_info


class BackboneUnavailable(RuntimeError):
    """Pretrained weights could not be found; the message says how to provide them."""


def default_weights_dir() -> Path:
    return Path(os.environ.get("FPT_WEIGHTS_DIR", "weights"))


def pretrained_source(backbone: str, size: str, weights_dir: Path | None = None) -> Path | None:
    """The local folder holding pretrained weights, or None if there is none yet."""
    fam, info = family(backbone), size_info(backbone, size)
    local = Path(weights_dir or default_weights_dir()) / info.local_name
    if (local / "config.json").exists():
        return local
    if fam.package_dir is not None and info.hub_id is not None and size == fam.default_size:
        pkg = fam.package_dir()
        if pkg is not None and (pkg / "config.json").exists():
            return pkg
    return None


def load_pretrained(
    backbone: str, size: str, weights_dir: Path | None = None, **kwargs: object
) -> nn.Module:
    """The family's model class `from_pretrained` (with `kwargs`): from the local folder of
    `pretrained_source`, else from the Hugging Face cache or the hub."""
    fam, info = family(backbone), size_info(backbone, size)
    hf_cls = fam.model_class()
    local = pretrained_source(backbone, size, weights_dir)
    if local is not None:
        try:
            return hf_cls.from_pretrained(str(local), local_files_only=True, **kwargs)
        except Exception as exc:  # corrupt or partial folder
            raise BackboneUnavailable(
                f"pretrained weights for {backbone} ({size}) at {local} could not be loaded: {exc}. "
                f"Fix: delete that folder and fetch it again: {fam.how_to_get.format(backbone=backbone, size=size)}"
            ) from exc
    where = Path(weights_dir or default_weights_dir()) / info.local_name
    if info.hub_id is None:
        raise BackboneUnavailable(
            f"no pretrained weights for {backbone} ({size}): this size has no public checkpoint. "
            f"Save one with save_pretrained() to {where}, or use init=random."
        )
    try:  # the Hugging Face cache (or the hub, if this machine can reach it)
        return hf_cls.from_pretrained(info.hub_id, **kwargs)
    except Exception as exc:
        raise BackboneUnavailable(
            f"pretrained weights for {backbone} ({size}, {info.hub_id}) are not available: not in {where}, "
            f"not in the Hugging Face cache, and the hub could not be reached ({type(exc).__name__}). "
            f"Fix: {fam.how_to_get.format(backbone=backbone, size=size)}, or put a from_pretrained folder at {where}."
        ) from exc


def fetch_weights(backbone: str, size: str, weights_dir: Path | None = None) -> Path:
    """Download pretrained weights into the weights dir (needs internet or a warm HF cache)."""
    fam, info = family(backbone), size_info(backbone, size)
    if info.hub_id is None:
        raise BackboneUnavailable(f"{backbone} ({size}) has no public checkpoint to fetch")
    dest = Path(weights_dir or default_weights_dir()) / info.local_name
    model = fam.model_class().from_pretrained(info.hub_id, **dict(fam.model_kwargs))
    tmp = dest.with_name(dest.name + ".partial")
    model.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)  # atomic: a half-written folder never looks complete
    return dest
