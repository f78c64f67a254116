"""Experiments -> run specs -> run paths: the one source of truth for what the pipeline
trains. Imported by the Snakefile and by the tests.

A run's settings merge, most specific last: RunSpec defaults, config `defaults`,
`tasks.<task>`, the experiment's `settings`, then the grid point. Identical specs from
different experiments are one run (one path).
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from fpt.models.families import CONFIG_DIR, FAMILIES, family
from fpt.models.fpt import INPUT_INITS
from fpt.models.freezing import PRESETS
from fpt.models.init import INITS
from fpt.models.init import bit_memory_source as init_source
from fpt.packs import pack_runs
from fpt.protocol import config_key, sweep_of, sweep_points
from fpt.schema import fill_defaults, schema_file
from fpt.spec import LSTM_CELLS, PRECISIONS, RANDOM_INITS, RunSpec
from fpt.tasks import TASKS, import_task_modules, reported_split, task_order


class ConfigError(ValueError):
    """An invalid config; the message names the key, the problem and the fix."""


def load_schema() -> dict[str, Any]:
    """The config schema with the enums of the registries filled in: tasks as the registry
    stands (the built-in tasks and those of the modules imported so far, e.g. a config's
    `task_modules`), in the tables' order; backbones, sizes, inits, presets and the run
    settings' choices from their own modules."""
    schema = copy.deepcopy(schema_file())
    sizes = dict.fromkeys(s for fam in FAMILIES.values() for s in fam.sizes)
    enums = {
        "task": task_order(TASKS),
        "backbone": list(FAMILIES),
        "size": list(sizes),
        "init": list(INITS),
        "trainable": list(PRESETS),
        "input_init": list(INPUT_INITS),
        "precision": list(PRECISIONS),
        "random_init": list(RANDOM_INITS),
        "lstm_cell": list(LSTM_CELLS),
    }
    for name, values in enums.items():
        schema["$defs"][name]["enum"] = values
    return schema


def _import_task_modules(config: dict[str, Any], source: str) -> None:
    """Import the config's `task_modules` (their tasks join the registry, and so the
    schema's task enum). A malformed list is left for the schema to report."""
    modules = config.get("task_modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        return
    for i, name in enumerate(modules):
        try:
            import_task_modules([name])
        except ImportError as exc:
            raise ConfigError(f"{source}: invalid value at task_modules[{i}]: {exc}.") from None


def _where(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Check `config` against the schema and the registries; return it with defaults filled.
    Raises ConfigError naming the offending key and the allowed values. The modules in
    `task_modules` are imported first, so their tasks are allowed values."""
    _import_task_modules(config, source)
    schema = load_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(config),
        key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))),
    )
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        hint = ""
        if err.validator == "enum":
            hint = f" Allowed values: {', '.join(map(str, err.validator_value))}."
        elif err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            hint = f" Allowed keys here: {', '.join(allowed)}." if allowed else ""
        raise ConfigError(
            f"{source}: invalid value at {_where(err.absolute_path)}: {err.message}.{hint}"
        )
    config = fill_defaults(config, schema)
    grid = expand(config, source=source)  # semantic checks (sizes, depths) happen here
    del grid
    return config


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return validate_config(config, source=str(path))


@cache
def n_layers(backbone: str, size: str) -> int:
    """Blocks in a backbone, read from its shipped architecture config (no weights needed)."""
    cfg = json.loads((CONFIG_DIR / family(backbone).sizes[size].config).read_text())
    for key in ("n_layer", "num_hidden_layers", "num_layers"):  # GPT-2; BERT-likes, ViT; T5, LSTM
        if key in cfg:
            return int(cfg[key])
    raise KeyError(f"{backbone} ({size}): no layer count in its config")


def _grid_points(grid: dict[str, list] | list[dict[str, list]]) -> list[dict[str, Any]]:
    products = grid if isinstance(grid, list) else [grid]
    points = []
    for prod in products:
        keys = list(prod)
        points += [
            dict(zip(keys, vals, strict=True))
            for vals in itertools.product(*(prod[k] for k in keys))
        ]
    return points


def _merge(*layers: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            out[k] = {**out.get(k, {}), **v} if k == "options" else v
    return out


def make_spec(
    config: dict[str, Any], experiment: dict[str, Any], point: dict[str, Any], where: str
) -> RunSpec:
    task = point["task"]
    merged = _merge(
        config.get("defaults"), config.get("tasks", {}).get(task), experiment.get("settings"), point
    )
    fam = family(merged["backbone"])
    merged.setdefault("size", fam.default_size)
    if merged["size"] not in fam.sizes:
        raise ConfigError(
            f"{where}: backbone {fam.name!r} has no size {merged['size']!r}. Allowed sizes for {fam.name}: "
            f"{', '.join(fam.sizes)}."
        )
    depth = merged.get("depth", "all")
    layers = n_layers(fam.name, merged["size"])
    if depth != "all" and int(depth) > layers:
        raise ConfigError(
            f"{where}: depth={depth} but {fam.name} ({merged['size']}) has only {layers} blocks. Use 1..{layers} or 'all'."
        )
    if merged.get("trainable", "fpt") not in PRESETS:
        raise ConfigError(f"{where}: unknown trainable preset {merged['trainable']!r}")
    if merged.get("init", "pretrained") in ("pretrained", "stats") and not any(
        info.hub_id for info in fam.sizes.values()
    ):
        raise ConfigError(
            f"{where}: init={merged.get('init', 'pretrained')!r} needs pretrained weights, and "
            f"{fam.name} has no public checkpoint. Use init random or bit_memory."
        )
    spec = RunSpec.from_json(merged)
    reserved = TASKS[spec.task].reserved_seeds(spec.options)
    if spec.seed in reserved:
        raise ConfigError(
            f"{where}: seed {spec.seed} would train {spec.task} on its own val/test examples "
            f"(they are drawn with seeds {sorted(reserved)} from data_seed). Fix: use another "
            "seed, or another data_seed in the task's options."
        )
    return spec


@dataclass
class Grid:
    """All runs of a config (path -> spec) and which runs each experiment needs."""

    runs: dict[str, RunSpec] = field(default_factory=dict)
    experiments: dict[str, list[str]] = field(default_factory=dict)
    # init=bit_memory runs -> their Bit Memory pretraining run (also in `runs`).
    sources: dict[str, str] = field(default_factory=dict)
    # experiment -> "paper" or "swept" (fpt.protocol)
    protocols: dict[str, str] = field(default_factory=dict)
    # swept experiments: experiment -> config (fpt.protocol.config_key) -> its runs, one per lr
    selections: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # fused packs (config pack_size, fpt.packs.pack_runs): pack name -> its runs; the rest lone
    packs: dict[str, list[str]] = field(default_factory=dict)

    def lone_runs(self) -> list[str]:
        """The runs that train in a job of their own (in no pack)."""
        packed = {r for runs in self.packs.values() for r in runs}
        return [r for r in self.runs if r not in packed]

    def specs(self, experiment: str) -> list[RunSpec]:
        return [self.runs[p] for p in self.experiments[experiment]]


def expand(config: dict[str, Any], source: str = "config") -> Grid:
    """Every run of `config`, per experiment in grid order (a run listed once per experiment).

    Speed (BENCHMARKS.md, "Pipeline at 10,000 runs"): a run's path hashes its settings
    (RunSpec.path), so each spec's path is computed once, and runs are deduplicated through
    dicts (insertion-ordered) rather than list scans, which were quadratic in an
    experiment's runs."""
    grid = Grid()
    for name, exp in config["experiments"].items():
        paths: dict[str, None] = {}
        try:
            sweep = sweep_of(exp, where=f"{source}: experiments.{name}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        grid.protocols[name] = "swept" if sweep else "paper"
        selections: dict[str, dict[str, None]] = {}
        for i, point in enumerate(sweep_points(_grid_points(exp["grid"]), sweep)):
            where = f"{source}: experiments.{name} (grid point {i}: {point})"
            spec = make_spec(config, exp, point, where=where)
            path = spec.path
            if sweep is not None:
                _check_sweepable(spec, where)
                selections.setdefault(config_key(path), {})[path] = None
            paths[path] = None
            grid.runs.setdefault(path, spec)
            if spec.init == "bit_memory":
                src = bit_memory_source(config, spec)
                src_path = src.path
                grid.runs.setdefault(src_path, src)
                grid.sources[path] = src_path
        if selections:
            grid.selections[name] = {c: list(runs) for c, runs in selections.items()}
        grid.experiments[name] = list(paths)
    grid.packs = pack_runs(grid.runs, config.get("pack_size", 1))
    return grid


def _check_sweepable(spec: RunSpec, where: str) -> None:
    """Selection on val must not see the split a table reports, and needs a val split."""
    if not TASKS[spec.task].has_val(spec.options):
        raise ConfigError(
            f"{where}: protocol 'swept' selects the lr on the val split, and {spec.task} has "
            "none with val_size 0. Fix: set a val_size in the experiment's settings, e.g. "
            "settings: {options: {val_size: 5000}}."
        )
    if reported_split(spec.task) == "val":
        raise ConfigError(
            f"{where}: protocol 'swept' selects the lr on the val split, and {spec.task}'s "
            "tables report the val split (the paper's number is on it): selection would see "
            f"the reported data. Fix: use protocol paper for {spec.task}."
        )


def bit_memory_source(config: dict[str, Any], spec: RunSpec) -> RunSpec:
    """The Bit Memory pretraining run of an init=bit_memory run under `config`: its settings
    are the config's `defaults` < `tasks.bit_memory` (fpt.models.init.bit_memory_source)."""
    settings = _merge(config.get("defaults"), config.get("tasks", {}).get("bit_memory"))
    return init_source(spec, settings)
