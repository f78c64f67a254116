"""Task registry: config name -> task class (`TASKS`), filled by the task modules' `@register`.

A task is one module: its Task subclass declares its name, label, place in the paper's
tables, reported split and the datasets it reads (with their fetch functions), and the
config schema's task enum, `fpt fetch-data`, the Snakemake rule `fetch_data` and the tables
read them from the registry. The built-in tasks are imported here. A task of your own lives
in any importable module that does

    from fpt.tasks import Task, register

    @register
    class MyTask(Task):
        name = "my_task"
        label = "My task"        # its column / panel title in tables and figures
        datasets = (MY_DATA,)    # fpt.data.DatasetInfo(name, folder, fetch function)

        @classmethod
        def shapes(cls, options): ...     # InputSpec, HeadSpec from the options alone
        def setup(self): ...              # load self.data_dir's files onto self.device
        def train_batch(self, batch_size, generator): ...
        def eval_batches(self, split, batch_size): ...

and is listed in the config's `task_modules` (imported before the config is validated;
the Snakemake jobs get it through FPT_TASK_MODULES). Outside Snakemake, `fpt` commands
import the modules listed in the environment variable FPT_TASK_MODULES (comma-separated).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fpt.data import DATASETS, DatasetInfo
from fpt.tasks import bits, homology, images, listops  # noqa: F401  (they register their tasks)
from fpt.tasks.base import Batch, HeadSpec, InputSpec, Task
from fpt.tasks.registry import (
    TASK_MODULES_ENV,
    TASKS,
    env_task_modules,
    export_task_modules,
    import_task_modules,
    paper_tasks,
    register,
    reported_split,
    required_files,
    task_label,
    task_order,
)


def make_task(
    name: str,
    device: torch.device | str = "cpu",
    options: dict[str, Any] | None = None,
    data_dir: str | Path | None = None,
) -> Task:
    """Task `name` on `device`; `data_dir`: where its dataset files are (default `data`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](torch.device(device), options, data_dir)


# Tasks of the user's own modules, for `fpt` commands run outside a config (and Snakemake's
# jobs): last, so those modules can import everything above from fpt.tasks.
import_task_modules(env_task_modules())

__all__ = [
    "DATASETS",
    "TASKS",
    "TASK_MODULES_ENV",
    "Batch",
    "DatasetInfo",
    "HeadSpec",
    "InputSpec",
    "Task",
    "export_task_modules",
    "import_task_modules",
    "make_task",
    "paper_tasks",
    "register",
    "reported_split",
    "required_files",
    "task_label",
    "task_order",
]
