"""The per-run metrics contract (README, "Where results land"): one Parquet file per run, one row per
evaluation and split, every grid axis as a column, plus run-level provenance columns.
Written atomically so a crash never leaves a half file that looks finished."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fpt import files

# Bump when columns change meaning; readers upgrade files from the versions in UPGRADABLE
# (see upgrade) and refuse others, naming the fix.
# 2: early stopping columns `patience`, `stop_step`, `best_step`.
# 3: fidelity settings `precision`, `random_init`, `backbone_dropout`, `lstm_cell`; the
#    device's name; `reachable_params`; per evaluation `eval_examples` and `chance`.
SCHEMA_VERSION = 3
UPGRADABLE = {1, 2}

SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("backbone", pa.string()),
        ("size", pa.string()),
        ("init", pa.string()),
        ("trainable", pa.string()),
        ("depth", pa.string()),
        ("input_init", pa.string()),
        ("lr", pa.float64()),
        ("seed", pa.int64()),
        ("settings", pa.string()),
        ("run", pa.string()),
        ("step", pa.int64()),
        ("samples", pa.int64()),
        ("wall_s", pa.float64()),
        ("split", pa.string()),
        ("loss", pa.float64()),
        ("accuracy", pa.float64()),
        ("diverged", pa.bool_()),
        # The step the run's training ended at (its budget, an early stop, or divergence) and,
        # under early stopping, the step of the best val accuracy, whose weights the final
        # checkpoint holds and whose test row is reported (null without early stopping).
        ("stop_step", pa.int64()),
        ("best_step", pa.int64()),
        # Size of the evaluated split in examples, and the accuracy of always answering its
        # most frequent label (a collapsed model's score); null on train rows.
        ("eval_examples", pa.int64()),
        ("chance", pa.float64()),
        ("trainable_params", pa.int64()),
        # Trainable parameters that can receive a gradient for the task's sequence length
        # (position rows beyond it cannot; fpt.models.reach).
        ("reachable_params", pa.int64()),
        ("total_params", pa.int64()),
        ("steps", pa.int64()),
        ("batch_size", pa.int64()),
        ("patience", pa.int64()),
        # Fidelity settings (fpt.spec); null where one does not apply to the run.
        ("precision", pa.string()),
        ("random_init", pa.string()),
        ("backbone_dropout", pa.float64()),
        ("lstm_cell", pa.string()),
        ("device", pa.string()),
        ("device_name", pa.string()),
        ("torch_version", pa.string()),
        ("transformers_version", pa.string()),
        ("fpt_version", pa.string()),
        ("python_version", pa.string()),
        ("git_rev", pa.string()),
        ("schema_version", pa.int64()),
    ]
)
COLUMNS = SCHEMA.names

# A run still training keeps its rows so far in <run dir>/progress.parquet (metrics.parquet's
# schema, rewritten after every evaluation by fpt.train, removed once metrics.parquet is
# written); `fpt status` reads it. Not a declared Snakemake output.
PROGRESS = "progress.parquet"


class MetricsSchemaError(ValueError):
    pass


@cache
def git_revision() -> str:
    """HEAD of the fpt checkout (with +dirty for uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(root), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        rev = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev + ("+dirty" if dirty else "")) if rev else "unknown"


def provenance(device: str, device_name: str | None = None) -> dict[str, Any]:
    import torch
    import transformers

    import fpt

    return {
        "device": device,
        "device_name": device_name,
        "torch_version": str(torch.__version__),  # a plain str, not torch's TorchVersion
        "transformers_version": transformers.__version__,
        "fpt_version": fpt.__version__,
        "python_version": platform.python_version(),
        "git_rev": git_revision(),
        "schema_version": SCHEMA_VERSION,
    }


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    df = pd.DataFrame(rows, columns=COLUMNS)
    return pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)


def write_atomic(table: pa.Table, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    files.write_with(path, lambda tmp: pq.write_table(table, tmp))


def upgrade(table: pa.Table, source: str | Path = "metrics") -> pa.Table:
    """`table` in the current SCHEMA. Version 1 files (before early stopping) are the same
    runs with patience 0: stop_step = the run's last step, best_step null. Version 2 files
    (before the fidelity settings) record what fpt did then: bf16 on CUDA, else fp32; the
    library's random init; ViT without dropout; the fused LSTM cell; split sizes, chance and
    reachable counts unknown (null). Files from any other version are refused, naming the
    fix. A file that claims the current version must hold exactly SCHEMA's columns (in any
    order): a missing, extra or renamed column is refused, never null-filled or dropped."""
    versions = (
        set(table.column("schema_version").to_pylist())
        if "schema_version" in table.column_names
        else {None}
    )
    if SCHEMA_VERSION in versions:
        _check_current_columns(table, source)
        if versions == {SCHEMA_VERSION}:
            try:
                return table.select(SCHEMA.names).cast(SCHEMA)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise MetricsSchemaError(
                    f"{source} claims metrics schema {SCHEMA_VERSION} but a column's values do "
                    f"not fit that schema's types ({exc}). Fix: rewrite the file with "
                    "fpt.metrics.to_table, or retrain that run (delete its folder)."
                ) from None
    if not versions or not versions <= UPGRADABLE | {SCHEMA_VERSION}:
        raise MetricsSchemaError(
            f"{source} was written with metrics schema {sorted(map(str, versions))}, this fpt "
            f"reads versions {sorted(UPGRADABLE | {SCHEMA_VERSION})}. Fix: retrain that run "
            "(delete its folder) or use the fpt version that wrote it."
        )
    df = table.to_pandas()
    if "stop_step" not in df:  # version 1
        df["stop_step"] = df.groupby("run")["step"].transform("max")
        df["best_step"] = None
        df["patience"] = 0
    if "precision" not in df:  # version 2
        df["precision"] = (
            df["device"].astype(str).str.startswith("cuda").map({True: "bf16", False: "fp32"})
        )
        random = df["init"].isin(["random", "bit_memory"]) & (df["backbone"] != "lstm")
        df["random_init"] = random.map({True: "library", False: None})
        df["backbone_dropout"] = (df["backbone"] == "vit").map({True: 0.0, False: None})
        df["lstm_cell"] = (df["backbone"] == "lstm").map({True: "fused", False: None})
    df["schema_version"] = SCHEMA_VERSION
    return to_table(df.to_dict("records"))


def _check_current_columns(table: pa.Table, source: str | Path) -> None:
    """Refuse a file claiming SCHEMA_VERSION whose column set is not SCHEMA's, naming the
    missing and extra columns (a renamed column is one of each) and the fix."""
    have, want = table.column_names, SCHEMA.names
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    dupes = sorted({c for c in have if have.count(c) > 1})
    if not (missing or extra or dupes):
        return
    parts = [
        f"{what} {cols}"
        for what, cols in (("missing", missing), ("extra", extra), ("duplicated", dupes))
        if cols
    ]
    renamed = " (a renamed column shows as one missing and one extra)" if missing and extra else ""
    raise MetricsSchemaError(
        f"{source} claims metrics schema {SCHEMA_VERSION} but its columns are not that "
        f"schema's: {'; '.join(parts)}{renamed}. Fix: rewrite the file with "
        "fpt.metrics.to_table (it writes exactly the schema's columns), or retrain that run "
        "(delete its folder); do not edit columns of a finished metrics file by hand."
    )


def read_run(path: str | Path) -> pd.DataFrame:
    """A run's metrics in the current schema (older versions upgraded, see upgrade)."""
    return upgrade(pq.read_table(path), path).to_pandas()
