"""Many run files -> one Parquet (all runs, or one experiment's runs)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fpt.metrics import SCHEMA, SCHEMA_VERSION, MetricsSchemaError, write_atomic


def collect(run_files: Iterable[str | Path], out: str | Path) -> int:
    """Concatenate run metrics files into `out`; returns the row count. Files from another
    metrics schema are refused with the file named."""
    tables = []
    for f in run_files:
        t = pq.read_table(f)
        if t.schema.names != SCHEMA.names or set(t.column("schema_version").to_pylist()) != {
            SCHEMA_VERSION
        }:
            raise MetricsSchemaError(
                f"{f} does not match metrics schema version {SCHEMA_VERSION}. Fix: delete that run's "
                "metrics.parquet so the workflow retrains it."
            )
        tables.append(t.cast(SCHEMA))
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    write_atomic(table, out)
    return table.num_rows
