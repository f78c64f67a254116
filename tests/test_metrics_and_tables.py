import pandas as pd
import pytest

from fpt.analysis.stats import cell
from fpt.analysis.tables import fpt_vs_full
from fpt.metrics import (
    COLUMNS,
    SCHEMA_VERSION,
    MetricsSchemaError,
    read_run,
    to_table,
    write_atomic,
)


def _rows(task, init, trainable, seed, accs, diverged=False):
    rows = []
    for step, acc in enumerate(accs):
        rows.append(
            {c: None for c in COLUMNS}
            | {
                "task": task,
                "backbone": "gpt2",
                "size": "small",
                "init": init,
                "trainable": trainable,
                "depth": "all",
                "input_init": "orthogonal",
                "lr": 1e-3,
                "seed": seed,
                "settings": "x",
                "run": f"{task}/{init}/{trainable}/{seed}",
                "step": step * 10,
                "samples": step * 40,
                "wall_s": 1.0,
                "split": "test",
                "loss": 0.1,
                "accuracy": acc,
                "diverged": diverged,
                "schema_version": SCHEMA_VERSION,
            }
        )
    return rows


def test_cell_mean_and_t_interval():
    c = cell([0.5, 0.7, 0.9])
    assert c.mean == pytest.approx(0.7)
    # sd = 0.2, t(0.975, 2) = 4.3027 -> half width 4.3027 * 0.2 / sqrt(3)
    assert c.ci95 == pytest.approx(4.302653 * 0.2 / 3**0.5, rel=1e-5)
    assert cell([0.9]).fmt() == "90.0 (n=1)"
    assert cell([0.5, 0.5], [False, True]).fmt().endswith("†")


def test_table1_uses_final_step_means_and_paper_numbers():
    rows = (
        _rows("bit_xor", "pretrained", "fpt", 0, [0.5, 1.0])
        + _rows("bit_xor", "pretrained", "fpt", 1, [0.5, 0.9])
        + _rows("bit_xor", "random", "full", 0, [0.5, 0.6], diverged=True)
    )
    table = fpt_vs_full(pd.DataFrame(rows))
    md = table.markdown()
    assert "Bit XOR (ours)" in md and "Bit XOR (paper)" in md
    fpt_row = next(r for r in table.rows if r[0].startswith("FPT"))
    assert fpt_row[1].startswith("95.0 ± ") and "(n=2)" in fpt_row[1] and fpt_row[2] == "100"
    full_row = next(r for r in table.rows if r[0].startswith("Full Transformer"))
    assert full_row[1] == "60.0 (n=1) †"
    csv = table.data.set_index("role")
    assert csv.loc["FPT", "accuracy_mean"] == pytest.approx(0.95) and csv.loc["FPT", "n"] == 2
    assert "\\pm" in table.latex() and "\\toprule" in table.latex()


def test_atomic_write_and_schema_version(tmp_path):
    path = tmp_path / "m.parquet"
    write_atomic(to_table(_rows("bit_xor", "pretrained", "fpt", 0, [0.5])), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]  # no temp file left behind
    df = read_run(path)
    assert list(df.columns) == COLUMNS
    old = df.assign(schema_version=0)
    old.to_parquet(tmp_path / "old.parquet")
    with pytest.raises(MetricsSchemaError, match="retrain that run"):
        read_run(tmp_path / "old.parquet")
