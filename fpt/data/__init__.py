"""Datasets on disk: where each one lives under the data dir, the marker file its download
rule writes, which tasks need which dataset, and the one error a task raises when its files
are missing or corrupt (naming the path and the command that fetches them).

Downloads themselves are in `fpt.data.download` (`fpt fetch-data DATASET --data-dir DIR`,
Snakemake rules `fetch_<dataset>` in workflow/rules/data.smk). Generated ListOps files come
from `fpt make-listops` (rule `make_listops`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = "data"


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # `fpt fetch-data` argument; the Snakemake rule is fetch_<name>
    folder: str  # under the data dir, in the layout the reading code (and torchvision/TAPE) use

    def marker(self, data_dir: str | Path) -> Path:
        """Written last by the download, so its presence means a complete, verified copy."""
        return Path(data_dir) / self.folder / ".complete"


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo("mnist", "MNIST"),
        DatasetInfo("cifar10", "cifar-10-batches-py"),
        DatasetInfo("listops", "listops-1000"),
        DatasetInfo("homology", "remote_homology"),
    ]
}

# Which downloaded dataset each task reads. Tasks not listed (bit_memory, bit_xor, digits)
# need no download; ListOps with `source: generated` needs the make_listops output instead.
TASK_DATASET: dict[str, str] = {
    "listops": "listops",
    "mnist": "mnist",
    "cifar10": "cifar10",
    "cifar10_lra": "cifar10",
    "homology": "homology",
}


def fetch_hint(dataset: str, data_dir: str | Path) -> str:
    info = DATASETS[dataset]
    return (
        f"Fetch it with `fpt fetch-data {dataset} --data-dir {data_dir}` "
        f"(Snakemake: rule fetch_{dataset}, target {info.marker(data_dir)})."
    )


def missing(task: str, path: Path, dataset: str, data_dir: str | Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"{task}: data file {path} does not exist. {fetch_hint(dataset, data_dir)}"
    )


def corrupt(task: str, path: Path, problem: str, dataset: str, data_dir: str | Path) -> ValueError:
    return ValueError(
        f"{task}: data file {path} is corrupt or not in the expected format ({problem}). "
        f"Delete it and fetch again: {fetch_hint(dataset, data_dir)}"
    )


def required_files(task: str, options: dict[str, Any], data_dir: str | Path) -> list[str]:
    """What a run of `task` with these options needs on disk before it can start: the
    dataset's download marker, or the generated ListOps files. Used by the Snakemake train
    rule's input function."""
    if task == "listops" and options.get("source", "lra") == "generated":
        from fpt.tasks.listops_gen import GenParams

        return [str(GenParams.from_options(options).marker(data_dir))]
    if task in TASK_DATASET:
        return [str(DATASETS[TASK_DATASET[task]].marker(data_dir))]
    return []
