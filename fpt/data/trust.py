"""Data files that are pickles by format, read only once verified.

Unpickling a file can run any code the file names, so the two datasets stored as pickles,
CIFAR-10's python batches (`fpt.tasks.images`) and the records of TAPE's remote homology
LMDBs (`fpt.tasks.homology`), are unpickled only from a file that is verified:

- its md5 is the one published for it (CIFAR-10: torchvision's per-batch md5s), or
- its SHA-256 is the one recorded in the dataset's `.complete` marker by `fpt fetch-data`,
  which writes it only for files it checked against the published archive md5 (homology:
  each split's `data.mdb`; no per-file checksum is published).

Otherwise (a file that fails its check, data placed by hand without a marker, a marker
written by an fpt that recorded no digests) the task raises `UnverifiedPickle`, naming the
file, why, and the two fixes: fetch it with `fpt fetch-data <dataset>` (which verifies), or
acknowledge that this copy is trusted with the config key `allow_unverified_pickles: true`;
the file is then read after a logged warning.

The acknowledgement is a fact about the machine's files, not about the experiment: it never
enters a RunSpec, a run path or a settings hash. It travels as the environment variable
`FPT_ALLOW_UNVERIFIED_PICKLES=1`, read here only (`allowed`): the Snakefile exports it for
its jobs when the config says so (as it exports FPT_TASK_MODULES), `fpt train` / `fpt
attention --allow-unverified-pickles` set it for their own process. Not a rule param: a
changed param reruns every finished train job (the profiles' rerun-triggers).

Cost: hashing is ~0.3 s for CIFAR-10's six batches (178 MB, md5), beside ~1 s to unpickle
them, so nothing is cached: a cache keyed on size and mtime could be forged as easily as
the file. Each CIFAR-10 batch is hashed from the same bytes that are then unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from fpt.data import DATASETS
from fpt.data import download as dl

log = logging.getLogger("fpt.data")

ENV = "FPT_ALLOW_UNVERIFIED_PICKLES"
CONFIG_KEY = "allow_unverified_pickles"
FLAG = "--allow-unverified-pickles"


class UnverifiedPickle(ValueError):
    """A pickle-format data file that matches no published or recorded checksum."""


def allowed() -> bool:
    """Whether unverified pickle files may be read (FPT_ALLOW_UNVERIFIED_PICKLES=1)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes")


def export(allow: bool) -> None:
    """With `allow`, acknowledge unverified pickles in this process's environment, so the
    processes it starts (Snakemake's jobs) read them too. False leaves the environment as
    it is."""
    if allow:
        os.environ[ENV] = "1"


def check(
    task: str,
    dataset: str,
    data_dir: str | Path,
    path: Path,
    content: bytes | None = None,
    md5: str | None = None,
) -> None:
    """Return when the pickle file `path` of `dataset` may be unpickled: its md5 is the
    published `md5`, or its SHA-256 is the one its dataset's marker records, or unverified
    pickles are acknowledged (`allowed`: after a warning). Else raise UnverifiedPickle.
    `content`: the file's bytes when the caller has read them (then exactly those are
    checked)."""
    data_dir = Path(data_dir)

    def digest(algo: str) -> str:
        if content is not None:
            return hashlib.new(algo, content).hexdigest()
        return dl.file_digests(path, (algo,))[algo]

    reasons = []
    if md5 is not None:
        got = digest("md5")
        if got == md5:
            return
        reasons.append(f"its md5 {got} is not the published {md5}")
    marker = DATASETS[dataset].marker(data_dir)
    recorded = dl.recorded_sha256(dataset, data_dir).get(dl.relpath(path, data_dir))
    if recorded is not None:
        got = digest("sha256")
        if got == recorded:
            return
        reasons.append(f"its SHA-256 {got} is not the {recorded} recorded in {marker}")
    elif not marker.is_file():
        reasons.append(f"there is no {marker} recording a verified fetch (placed by hand?)")
    else:
        reasons.append(f"{marker} records no SHA-256 for it (written by an earlier fpt?)")
    why = "; ".join(reasons)
    if allowed():
        log.warning(
            "%s: reading %s although it is not verified (%s): unpickling it could run code; "
            "read because unverified pickles are acknowledged (%s / %s=1)",
            task,
            path,
            why,
            CONFIG_KEY,
            ENV,
        )
        return
    raise UnverifiedPickle(
        f"{task}: data file {path} was not read: it is a pickle, and unpickling a file can "
        f"run arbitrary code, so fpt reads it only when its checksum matches the published "
        f"one or the one `fpt fetch-data` recorded; {why}. Fix: fetch it with "
        f"`fpt fetch-data {dataset} --data-dir {data_dir}` (Snakemake: `snakemake -f "
        f"{marker}`), which verifies it against the published checksum and records it; or, "
        f"if you trust this copy, acknowledge it with the config key `{CONFIG_KEY}: true` "
        f"(outside Snakemake: `fpt train {FLAG}`, or {ENV}=1)."
    )
