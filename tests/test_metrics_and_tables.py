import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fpt.analysis.stats import cell
from fpt.metrics import (
    COLUMNS,
    SCHEMA_VERSION,
    MetricsSchemaError,
    read_run,
    to_table,
    write_atomic,
)
from tests.synthetic import metric_rows


def test_cell_mean_and_t_interval():
    c = cell([0.5, 0.7, 0.9])
    assert c.mean == pytest.approx(0.7)
    # sd = 0.2, t(0.975, 2) = 4.3027 -> half width 4.3027 * 0.2 / sqrt(3)
    assert c.ci95 == pytest.approx(4.302653 * 0.2 / 3**0.5, rel=1e-5)
    assert cell([0.9]).fmt() == "90.0 (n=1)"
    assert cell([0.5, 0.5], [False, True]).fmt().endswith("†")


def test_atomic_write_and_schema_version(tmp_path):
    path = tmp_path / "m.parquet"
    write_atomic(to_table(metric_rows([0.5])), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]  # no temp file left behind
    df = read_run(path)
    assert list(df.columns) == COLUMNS
    old = df.assign(schema_version=0)
    old.to_parquet(tmp_path / "old.parquet")
    with pytest.raises(MetricsSchemaError, match="retrain that run"):
        read_run(tmp_path / "old.parquet")


# ---- a file claiming the current schema must hold exactly its columns ----------------------


def _current(tmp_path, name="m.parquet"):
    """A valid current-schema file's table (two runs' rows) and where to write a variant."""
    rows = metric_rows([0.5, 0.75]) + metric_rows([0.25], seed=1)
    return to_table(rows), tmp_path / name


def test_a_current_file_missing_a_column_is_refused_naming_file_column_and_fix(tmp_path):
    table, path = _current(tmp_path, "missing.parquet")
    pq.write_table(table.drop_columns(["chance"]), path)
    with pytest.raises(MetricsSchemaError) as err:
        read_run(path)
    msg = str(err.value)
    assert str(path) in msg
    assert f"claims metrics schema {SCHEMA_VERSION}" in msg
    assert "missing ['chance']" in msg and "extra" not in msg
    assert "Fix: rewrite the file with fpt.metrics.to_table" in msg and "retrain" in msg


def test_a_current_file_with_an_extra_column_is_refused_not_trimmed(tmp_path):
    table, path = _current(tmp_path, "extra.parquet")
    pq.write_table(table.append_column("note", pa.array(["x"] * table.num_rows)), path)
    with pytest.raises(MetricsSchemaError) as err:
        read_run(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "extra ['note']" in msg and "missing" not in msg
    assert "Fix:" in msg


def test_a_current_file_with_a_renamed_column_is_refused_naming_both_names(tmp_path):
    table, path = _current(tmp_path, "renamed.parquet")
    names = ["acc" if n == "accuracy" else n for n in table.column_names]
    pq.write_table(table.rename_columns(names), path)
    with pytest.raises(MetricsSchemaError) as err:
        read_run(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "missing ['accuracy']" in msg and "extra ['acc']" in msg
    assert "renamed column" in msg and "Fix:" in msg


def test_a_current_file_with_its_columns_reordered_reads_back_identical(tmp_path):
    table, path = _current(tmp_path)
    write_atomic(table, path)
    expected = read_run(path)
    shuffled = tmp_path / "shuffled.parquet"
    pq.write_table(table.select(list(reversed(table.column_names))), shuffled)
    got = read_run(shuffled)
    assert list(got.columns) == COLUMNS
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_a_version_2_file_still_upgrades(tmp_path):
    """Version 2 lacks the fidelity columns (schema 3): they are filled as fpt ran then."""
    v3 = ("precision", "random_init", "backbone_dropout", "lstm_cell", "device_name",
          "reachable_params", "eval_examples", "chance")  # fmt: skip
    rows = metric_rows([0.5, 0.75], backbone="lstm", size="l3", init="random")
    df = pd.DataFrame(rows).drop(columns=list(v3)).assign(schema_version=2, device="cpu")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "v2.parquet")
    got = read_run(tmp_path / "v2.parquet")
    assert list(got.columns) == COLUMNS
    assert got["schema_version"].tolist() == [SCHEMA_VERSION] * 2
    assert got["precision"].tolist() == ["fp32", "fp32"]  # cpu
    assert got["lstm_cell"].tolist() == ["fused", "fused"]  # the only cell fpt had then
    assert got["random_init"].isna().all()  # the LSTM's own init, not the library's
    assert got["eval_examples"].isna().all() and got["chance"].isna().all()
    assert got["accuracy"].tolist() == [0.5, 0.75]


def test_a_current_file_with_a_column_of_the_wrong_type_is_refused_naming_the_file(tmp_path):
    table, path = _current(tmp_path, "types.parquet")
    i = table.schema.get_field_index("accuracy")
    bad = table.set_column(i, "accuracy", pa.array(["high"] * table.num_rows))
    pq.write_table(bad, path)
    with pytest.raises(MetricsSchemaError, match="do not fit that schema's types") as err:
        read_run(path)
    assert str(path) in str(err.value) and "Fix:" in str(err.value)
