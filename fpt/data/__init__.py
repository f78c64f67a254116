"""Datasets on disk: the registry of downloadable datasets (name, folder under the data dir,
the marker file its download writes, its fetch function), and the one error a task raises
when its files are missing or corrupt (naming the path and the command that fetches them).

Each dataset is declared by the module of the task that reads it (MNIST and CIFAR-10 in
`fpt.tasks.images`, ListOps in `fpt.tasks.listops`, homology in `fpt.tasks.homology`, a
task of your own in its module: see `fpt.tasks`) and lands here when that task is
registered, so `fpt fetch-data`, `fpt.tasks.required_files` and the Snakemake rule
`fetch_data` all read this one registry. This package never imports the tasks: import
`fpt.tasks` (every entry point does) to fill `DATASETS`.

The download machinery (resume, checksums, extraction, markers) is `fpt.data.download`
(`fpt fetch-data DATASET --data-dir DIR`, Snakemake rule `fetch_data` and the named targets
`fetch_<dataset>` in workflow/rules/data.smk). Generated ListOps files come from
`fpt make-listops` (rule `make_listops`). Files that are pickles by format are read only
once verified against a published or recorded checksum, or acknowledged: `fpt.data.trust`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = "data"


@dataclass(frozen=True)
class DatasetInfo:
    """A downloadable dataset. `fetch(data_dir)` downloads and verifies it into
    `data_dir / folder` and writes the marker last (`fpt.data.download` has the pieces);
    `about` is one line for `fpt fetch-data --help` and the Snakemake rule."""

    name: str  # `fpt fetch-data` argument; the named Snakemake target is fetch_<name>
    folder: str  # under the data dir, in the layout the reading code (and torchvision/TAPE) use
    fetch: Callable[[Path], Path] | None = field(default=None, compare=False, repr=False)
    about: str = field(default="", compare=False)

    def marker(self, data_dir: str | Path) -> Path:
        """Written last by the download, so its presence means a complete, verified copy."""
        return Path(data_dir) / self.folder / ".complete"


# name -> dataset, filled by the task modules (register_dataset, or fpt.tasks.register for
# the datasets a task class declares).
DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add `info` to DATASETS (idempotent for the same name and folder). A name already
    taken by another folder, or a folder another dataset owns, is an error: two datasets
    would share one marker."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", info.name):
        raise ValueError(f"dataset name {info.name!r}: use lower case letters, digits and _")
    if not info.folder or "/" in info.folder or info.folder.startswith("."):
        raise ValueError(f"dataset {info.name}: folder {info.folder!r} must be one plain name")
    old = DATASETS.get(info.name)
    if old is not None and old.folder != info.folder:
        raise ValueError(
            f"dataset {info.name!r} is already declared with folder {old.folder!r}, "
            f"not {info.folder!r}"
        )
    for other in DATASETS.values():
        if other.name != info.name and other.folder == info.folder:
            raise ValueError(
                f"dataset {info.name!r}: folder {info.folder!r} belongs to dataset {other.name!r}"
            )
    DATASETS[info.name] = info
    return info


def folder_pattern() -> str:
    """A regex matching exactly the registered datasets' folders (the Snakemake wildcard
    constraint of rule fetch_data's output, `<data dir>/<folder>/.complete`)."""
    return "|".join(re.escape(d.folder) for d in DATASETS.values()) or "(?!)"


def dataset_of_folder(folder: str) -> str:
    """The name of the dataset stored in `folder`."""
    for d in DATASETS.values():
        if d.folder == folder:
            return d.name
    raise ValueError(f"no dataset is stored in a folder {folder!r}")


def fetch_hint(dataset: str, data_dir: str | Path) -> str:
    info = DATASETS[dataset]
    return (
        f"Fetch it with `fpt fetch-data {dataset} --data-dir {data_dir}` "
        f"(Snakemake: target fetch_{dataset}, or {info.marker(data_dir)} by rule fetch_data)."
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
