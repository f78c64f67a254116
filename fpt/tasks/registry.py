"""The task registry and what is read from the tasks' declarations: config name -> task
class (`TASKS`), each task's label, reported split and place in the paper's tables, and the
files a run needs. A task module registers its classes with `@register`; the built-in ones
are imported by `fpt.tasks`, others by the config key `task_modules` (or the environment
variable `FPT_TASK_MODULES` for `fpt` commands: `import_task_modules`).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fpt.data import register_dataset
from fpt.tasks.base import Task

TASKS: dict[str, type[Task]] = {}

# Comma-separated module names that `import fpt.tasks` imports, so that `fpt train` and
# the other commands (and the Snakemake jobs running them) know the config's own tasks.
TASK_MODULES_ENV = "FPT_TASK_MODULES"


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: add a Task subclass (and the datasets it declares) to the registry
    under its `name`. Registering the same class again is a no-op (so is re-registering a
    reloaded module's class); another class under a taken name is an error."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"@register takes a Task subclass, not {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(
            f"{cls.__module__}.{cls.__qualname__}: set `name` on the class, lower case "
            f"letters, digits and _ (it is the config's task value), not {name!r}"
        )
    if cls.reported_split not in ("train", "val", "test", *cls.eval_splits):
        raise ValueError(f"{name}: reported_split {cls.reported_split!r} is not a split it has")
    old = TASKS.get(name)
    if old is not None and (old.__module__, old.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ValueError(
            f"task {name!r} is already registered by {old.__module__}.{old.__qualname__}"
        )
    for info in cls.datasets:
        register_dataset(info)
    TASKS[name] = cls
    return cls


def import_task_modules(names: Iterable[str]) -> list[str]:
    """Import each module (its `@register`s add its tasks); returns the names imported.
    An ImportError names the module and what fixes it."""
    done = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(
                f"cannot import task module {name!r} ({exc}). Fix: put the folder that holds "
                "it on PYTHONPATH, or install it"
            ) from exc
        done.append(name)
    return done


def env_task_modules() -> list[str]:
    """The modules named by FPT_TASK_MODULES (comma-separated)."""
    return [m.strip() for m in os.environ.get(TASK_MODULES_ENV, "").split(",") if m.strip()]


def export_task_modules(names: Iterable[str]) -> str:
    """Add `names` to FPT_TASK_MODULES in this process's environment, so the processes it
    starts (Snakemake jobs running `python -m fpt ...`) import them too; returns the value."""
    merged = list(dict.fromkeys([*env_task_modules(), *names]))
    if merged:
        os.environ[TASK_MODULES_ENV] = ",".join(merged)
    return ",".join(merged)


def task_label(task: str) -> str:
    """How tables and figures name `task` (its class's `label`; the name itself for a task
    without one, or one not registered in this process)."""
    cls = TASKS.get(task)
    if cls is None:
        return str(task)
    return cls.__dict__.get("label") or cls.name  # a subclass names itself, or goes by name


def reported_split(task: str | None, default: str = "test") -> str:
    """The split a table reports as "test" for `task` (Task.reported_split)."""
    cls = TASKS.get(task or "")
    return cls.reported_split if cls is not None else default


def paper_tasks() -> list[str]:
    """The paper's tasks in the order of its tables (Task.paper_order)."""
    ranked = [
        (c.paper_order, n)
        for n, c in TASKS.items()
        if c.__dict__.get("paper_order") is not None  # not inherited: one task per place
    ]
    return [n for _, n in sorted(ranked)]


def task_order(names: Iterable[str]) -> list[str]:
    """`names` without repeats, the paper's tasks first in the paper's order, then the rest
    by name: the one order of tasks in every table and figure."""
    present = {str(n) for n in names}
    paper = paper_tasks()
    return [t for t in paper if t in present] + sorted(present - set(paper))


def required_files(task: str, options: dict[str, Any] | None, data_dir: str | Path) -> list[str]:
    """What a run of `task` with these options needs on disk before it can start: its
    datasets' download markers, or the generated ListOps files (Task.required_files). Used
    by the Snakemake train rule's input function."""
    return TASKS[task].required_files(dict(options or {}), data_dir)
