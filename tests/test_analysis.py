"""Table and figure builders on synthetic metric frames with known answers."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fpt.analysis import targets
from fpt.analysis.compare import Row, compare_table
from fpt.analysis.stats import steps_to_converge
from fpt.metrics import to_table, write_atomic
from tests.synthetic import metric_rows


def _frame(*runs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([r for run in runs for r in run])


def _build(tmp_path: Path, name: str, df: pd.DataFrame, **kw) -> dict[str, Path]:
    metrics = tmp_path / "m.parquet"
    write_atomic(to_table(df.to_dict("records")), metrics)
    out = targets.TARGETS[name].outputs(tmp_path / "figs")
    targets.build(name, {"exp": metrics}, out, label="demo", **kw)
    return out


def test_steps_to_converge_is_the_first_step_that_stays_near_the_best():
    steps = [0, 10, 20, 30, 40, 50]
    assert steps_to_converge(steps, [0.5, 0.9, 0.7, 0.95, 0.99, 1.0], 0.05) == 30
    assert steps_to_converge(steps, [0.5, 0.9, 0.7, 0.95, 0.99, 1.0], 0.01) == 40
    # a flat curve has converged at its first evaluation; order of the input does not matter
    assert steps_to_converge([20, 0, 10], [0.5, 0.5, 0.5], 0.01) == 0
    assert steps_to_converge([], [], 0.01) is None


def test_compare_table_cells_means_intervals_markers_and_missing():
    df = _frame(
        metric_rows([0.5, 1.0], seed=0),
        metric_rows([0.5, 0.9], seed=1),
        metric_rows([0.5, 0.6], init="random", trainable="full", diverged=True),
        metric_rows([0.4, 0.7], backbone="minilm", size="l6"),
    )
    rows = [
        Row("FPT", {"init": "pretrained", "trainable": "fpt"}, {"bit_xor": 100}),
        Row("Full", {"init": "random", "trainable": "full"}, {"bit_xor": 99}),
        Row("Stats", {"init": "stats"}, {"bit_xor": 98}),
    ]
    t = compare_table(
        df, rows, title="t", caption="c", missing="not in demo", cols=["bit_xor", "mnist"]
    )
    by = {r[0]: r for r in t.rows}
    # FPT splits by backbone/size: gpt2 has two seeds (mean 95, t-interval), minilm one
    half = 12.706204736 * np.std([1.0, 0.9], ddof=1) / np.sqrt(2) * 100
    assert by["FPT (gpt2 small)"][1] == f"95.0 ± {half:.1f} (n=2)"
    assert by["FPT (gpt2 small)"][2] == "100"
    assert by["FPT (minilm l6)"][1] == "70.0 (n=1)"
    assert by["Full (gpt2 small)"][1] == "60.0 (n=1) †"
    # no runs: the row stays, cells say so; MNIST column has the paper's dash
    assert by["Stats"][1:5] == ["not in demo", "98", "not in demo", "—"]
    csv = t.data.set_index(["row", "backbone"])
    assert csv.loc[("FPT", "gpt2"), "n"].tolist() == [2, 0]
    assert csv.loc[("FPT", "gpt2"), "accuracy_mean"].iloc[0] == pytest.approx(0.95)
    assert csv.loc[("Full", "gpt2"), "diverged"].iloc[0] == 1


def test_compute_efficiency_table_counts_steps_and_speedup(tmp_path):
    df = _frame(
        metric_rows([0.5, 1.0, 1.0, 1.0]),  # converges at step 10
        metric_rows([0.5, 0.6, 0.8, 1.0], init="random"),  # at step 30
    )
    out = _build(
        tmp_path, "table4_compute_efficiency", df, settings={"convergence_tolerance": 0.01}
    )
    csv = pd.read_csv(out["csv"]).set_index("task")
    assert csv.loc["bit_xor", "fpt_steps"] == 10 and csv.loc["bit_xor", "random_steps"] == 30
    assert csv.loc["bit_xor", "speedup"] == pytest.approx(3.0)
    assert csv.loc["bit_xor", "paper_speedup"] == 40
    md = out["md"].read_text()
    assert "1 percentage point(s) (analysis.convergence_tolerance)" in md and "3.0x" in md
    assert "| MNIST | — | not in demo |" in md


def test_train_vs_test_table_reports_the_gap(tmp_path):
    df = _frame(metric_rows([0.5, 0.6], train=[0.5, 0.9], task="cifar10_lra"))
    csv = pd.read_csv(_build(tmp_path, "table13_train_vs_test", df)["csv"])
    row = csv[csv.task == "cifar10_lra"].iloc[0]
    assert row.train_mean == pytest.approx(0.9) and row.gap_mean == pytest.approx(0.3)
    assert row.paper_train == 38.5 and row.paper_test == 38.6


def test_depth_table_has_a_column_per_depth(tmp_path):
    df = _frame(
        metric_rows([0.2, 0.36], task="listops", trainable="output_ln", depth="2"),
        metric_rows([0.2, 0.17], task="listops", trainable="output_ln", depth="1"),
    )
    md = _build(tmp_path, "table8_depth", df)["md"].read_text()
    line = next(
        r for r in md.splitlines() if r.startswith("| ListOps, output + layer norms, pretrained")
    )
    cells = [c.strip() for c in line.strip("|").split("|")]
    # 1 (ours, paper), 2 (ours, paper), ...
    assert cells[1:5] == ["17.0 (n=1)", "17", "36.0 (n=1)", "36"]


def test_every_target_renders_from_an_empty_config(tmp_path):
    """A config without a target's experiments still gets the file, saying so."""
    for name, t in targets.TARGETS.items():
        out = t.outputs(tmp_path)
        targets.build(name, {}, out, label="demo")
        for p in out.values():
            assert p.stat().st_size > 0, p
        if t.kind == "table":
            assert "not in demo" in out["md"].read_text() or name == "table13_train_vs_test"


def test_every_target_has_its_own_module():
    modules = [t.module for t in targets.TARGETS.values()]
    assert len(set(modules)) == len(modules)
    for t in targets.TARGETS.values():
        assert Path(t.code()[0]).stem == t.name
