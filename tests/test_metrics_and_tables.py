import pytest

from fpt.analysis.stats import cell
from fpt.metrics import (
    COLUMNS,
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
