"""The config schema (package data, so an installed fpt validates configs without a
checkout) and the defaults it states: the one place a config default is written.

fpt.grid validates configs against it, with the enums of the registries filled in; the
analysis reads its `analysis` defaults from here.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import yaml

SCHEMA_PATH = files("fpt") / "schemas" / "config.schema.yaml"


@cache
def schema_file() -> dict[str, Any]:
    """The schema as written (enums the registries fill are absent: fpt.grid.load_schema).
    Cached: copy it before changing it."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def fill_defaults(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`config` with the schema's defaults: top-level ones, and those of nested blocks that
    have their own (`analysis`)."""
    out = dict(config)
    for key, prop in schema["properties"].items():
        if "default" in prop and key not in out:
            out[key] = prop["default"]
        if prop.get("type") == "object" and "properties" in prop and isinstance(out.get(key), dict):
            out[key] = fill_defaults(out[key], prop)
    return out


@cache
def _analysis_defaults() -> tuple[tuple[str, Any], ...]:
    return tuple(fill_defaults({}, schema_file()["properties"]["analysis"]).items())


def analysis_settings(settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config's `analysis` block with the schema's defaults under it."""
    return {**dict(_analysis_defaults()), **(settings or {})}
