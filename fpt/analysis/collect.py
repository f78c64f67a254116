"""Many run files -> one Parquet (all runs, or one experiment's runs)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fpt.metrics import SCHEMA, SCHEMA_VERSION, upgrade, write_atomic


def collect(run_files: Iterable[str | Path], out: str | Path) -> int:
    """Concatenate run metrics files into `out`; returns the row count. Files from an older
    metrics schema are upgraded (fpt.metrics.upgrade); others are refused with the file named."""
    # upgrade: older schema versions are converted, unknown ones refused naming the file
    tables = [_read(f) for f in run_files]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    write_atomic(table, out)
    return table.num_rows


def _read(f: str | Path) -> pa.Table:
    """One run file in the current schema. Speed (BENCHMARKS.md, 5,000 files): ParquetFile
    reads a small file ~3x faster than pq.read_table (no dataset discovery), and a file
    already in the current schema skips upgrade's per-row version check."""
    t = pq.ParquetFile(f).read(use_threads=False)
    if t.schema.equals(SCHEMA) and pc.unique(t.column("schema_version")).to_pylist() == [
        SCHEMA_VERSION
    ]:
        return t
    return upgrade(t, f)
