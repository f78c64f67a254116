"""What every target writes beside its main files: each table as an HTML page, each figure's
tidy CSV of exactly the data it plots (header only when the config lacks the experiment)."""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fpt.analysis import attention, targets
from fpt.analysis.figures import (
    attention_maps,
    convergence,
    lr_sweep,
    model_size_scaling,
    train_vs_test,
    unfreezing_ladder,
)
from fpt.analysis.render import Table
from fpt.metrics import to_table, write_atomic
from tests.synthetic import metric_rows
from tests.test_protocols import curve, two_protocols

FIGURES = [t for t in targets.TARGETS.values() if t.kind == "figure"]
COLUMNS = {
    "convergence": convergence.COLUMNS,
    "attention_maps": attention_maps.COLUMNS,
    "model_size_scaling": model_size_scaling.COLUMNS,
    "train_vs_test": train_vs_test.COLUMNS,
    "unfreezing_ladder": unfreezing_ladder.COLUMNS,
    "lr_sweep": lr_sweep.COLUMNS,
}


def _build(tmp_path: Path, name: str, experiments: dict[str, list[dict]], **kw) -> pd.DataFrame:
    """Build target `name` from synthetic metric rows per experiment; its figure CSV."""
    paths = {}
    for e, rows in experiments.items():
        paths[e] = tmp_path / f"{e}.parquet"
        write_atomic(to_table(rows), paths[e])
    out = targets.TARGETS[name].outputs(tmp_path / "figs")
    targets.build(name, paths, out, label="demo", **kw)
    assert all(p.stat().st_size > 0 for p in out.values())
    data = pd.read_csv(out["csv"])
    assert list(data.columns) == COLUMNS[name]
    return data


def _final_test(rows: list[dict]) -> dict[str, dict]:
    """run -> its last test row."""
    last: dict[str, dict] = {}
    for r in rows:
        if r["split"] == "test" and r["step"] >= last.get(r["run"], {"step": -1})["step"]:
            last[r["run"]] = r
    return last


# ---------------------------------------------------------------- tables as HTML


class _Cells(HTMLParser):
    """The text of every <th>/<td>, row by row, and of every <p>."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[tuple[str, str]]] = []
        self.paragraphs: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag in ("th", "td", "p"):
            self._in = tag
            (self.rows[-1] if tag != "p" else self.paragraphs).append(
                (tag, "") if tag != "p" else ""
            )

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in == "p":
            self.paragraphs[-1] += data
        elif self._in:
            tag, text = self.rows[-1][-1]
            self.rows[-1][-1] = (tag, text + data)


def test_table_html_has_a_header_row_one_row_per_table_row_escaped_cells_and_caption(tmp_path):
    header = ["Model", "Bit XOR", "A & B"]
    rows = [["FPT <gpt2>", "100.0 ± 0.0 (n=2)", "x & y"], ["Random", "50.0 (n=1) †", "—"]]
    t = Table(
        "Title <1>",
        "Caption: a < b & c.",
        header,
        rows,
        pd.DataFrame({"a": [1]}),
        notes=["note & more"],
    )
    out = {ext: tmp_path / f"t.{ext}" for ext in targets.TABLE_EXTS}
    t.write_to(out)
    page = out["html"].read_text(encoding="utf-8")
    assert page.count("<tr>") == len(rows) + 1
    assert "FPT &lt;gpt2&gt;" in page and "x &amp; y" in page and "FPT <gpt2>" not in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    parsed = _Cells()
    parsed.feed(page)
    assert parsed.rows[0] == [("th", h) for h in header]
    assert [[text for _, text in r] for r in parsed.rows[1:]] == rows
    assert all(tag == "td" for r in parsed.rows[1:] for tag, _ in r)
    assert "Caption: a < b & c." in parsed.paragraphs
    assert "Title &lt;1&gt;" in page and "note &amp; more" in page


def test_every_target_has_the_new_formats():
    for t in targets.TARGETS.values():
        exts = set(t.outputs("figs"))
        assert ("html" in exts) if t.kind == "table" else ({"pdf", "png", "csv"} <= exts)


def test_a_table_target_writes_its_rows_as_html(tmp_path):
    rows = metric_rows([0.5, 0.6], train=[0.5, 0.9], task="cifar10_lra")
    paths = {"table1": tmp_path / "m.parquet"}
    write_atomic(to_table(rows), paths["table1"])
    out = targets.TARGETS["table13_train_vs_test"].outputs(tmp_path / "figs")
    targets.build("table13_train_vs_test", paths, out, label="demo")
    md_rows = [ln for ln in out["md"].read_text().splitlines() if ln.startswith("| ")]
    parsed = _Cells()
    parsed.feed(out["html"].read_text(encoding="utf-8"))
    assert len(parsed.rows) == len(md_rows)  # header + one per row, as in the Markdown
    assert any("60.0" in text for r in parsed.rows for _, text in r)


# ---------------------------------------------------------------- figures' CSVs


def test_convergence_csv_is_every_test_evaluation_of_the_runs_shown(tmp_path):
    shown = [
        metric_rows([0.5, 0.9, 1.0], seed=0, train=[0.6, 0.95, 1.0]),
        metric_rows([0.5, 0.8, 0.9], seed=1),
        metric_rows([0.5, 0.6, 0.7], init="random"),
        metric_rows([0.4, 0.7], task="mnist", trainable="full"),
    ]
    stats = metric_rows([0.5, 0.5], init="stats")  # not plotted
    diverged = metric_rows([0.5, 0.6, 0.1], init="random", seed=1, diverged=True)
    diverged[-1]["loss"] = float("inf")  # the step after divergence is not plotted
    data = _build(tmp_path, "convergence", {"table1": [*sum(shown, []), *stats, *diverged]})
    expected = {
        (r["run"], r["step"], round(r["accuracy"] * 100, 6))
        for r in sum(shown, []) + diverged[:-1]
        if r["split"] == "test"
    }
    got = set(zip(data["run"], data["step"], data["accuracy_pct"].round(6), strict=True))
    assert got == expected and len(data) == len(expected)
    assert set(data["split"]) == {"test"}
    assert set(data["panel"]) == {"Bit XOR", "MNIST"}
    assert list(dict.fromkeys(data["panel"])) == ["Bit XOR", "MNIST"]  # panel order
    xor = data[data["panel"] == "Bit XOR"]
    assert set(xor["model"]) == {"gpt2 small, pretrained, fpt", "gpt2 small, random, fpt"}
    assert sorted(xor[xor["model"].str.contains("pretrained")]["seed"].unique()) == [0, 1]


def test_model_size_csv_is_one_row_per_run_plus_the_papers_points(tmp_path):
    runs = []
    for size, params in (("small", 124e6), ("medium", 355e6)):
        for init, acc in (("pretrained", 0.6), ("random", 0.5)):
            for seed in (0, 1):
                run = metric_rows([0.1, acc + seed / 100], task="cifar10", size=size, init=init,
                                  seed=seed)  # fmt: skip
                runs += [r | {"total_params": params} for r in run]
    runs += metric_rows([0.2, 0.3], task="cifar10", trainable="full")  # not FPT: not plotted
    data = _build(tmp_path, "model_size_scaling", {"sizes": runs})
    ours = data[data["source"] == "ours"]
    finals = {k: v for k, v in _final_test(runs).items() if v["trainable"] == "fpt"}
    assert len(ours) == len(finals) == 8 and set(ours["run"]) == set(finals)
    for row in ours.itertuples():
        f = finals[row.run]
        assert row.test_accuracy_pct == pytest.approx(f["accuracy"] * 100)
        assert row.total_params == f["total_params"] and row.panel == "CIFAR-10"
        assert row.series == f"gpt2, {f['init']}"
    paper = data[data["source"] == "paper"].set_index(["init", "size"])
    assert len(paper) == 6 and paper["run"].isna().all()
    assert paper.loc[("pretrained", "large"), "test_accuracy_pct"] == 72.1
    assert paper.loc[("random", "small"), "total_params"] == model_size_scaling.GPT2_PARAMS["small"]


def test_train_vs_test_csv_is_one_point_per_run(tmp_path):
    a = metric_rows([0.5, 0.6], train=[0.5, 0.9], task="cifar10_lra")
    b = metric_rows([0.5, 0.7], train=[0.6, 0.75], task="cifar10_lra", trainable="full")
    c = metric_rows([0.5, 0.8], task="mnist")  # no train split: no point
    data = _build(tmp_path, "train_vs_test", {"table1": a + b, "output_only": c})
    assert len(data) == 2 and set(data["panel"]) == {"C10 LRA"}
    by = data.set_index("run")
    assert by.loc[a[0]["run"], "train_accuracy_pct"] == pytest.approx(90)
    assert by.loc[a[0]["run"], "test_accuracy_pct"] == pytest.approx(60)
    assert by.loc[b[0]["run"], "train_accuracy_pct"] == pytest.approx(75)
    assert by.loc[b[0]["run"], "model"] == "gpt2 small, pretrained, full"


def test_unfreezing_ladder_csv_is_one_row_per_run_plus_the_paper_ticks(tmp_path):
    runs = []
    for init in ("pretrained", "random"):
        for trainable, acc in (("output_only", 0.55), ("fpt", 0.95)):
            for seed in (0, 1):
                runs += metric_rows([0.5, acc + seed / 100], init=init, trainable=trainable,
                                    seed=seed)  # fmt: skip
    runs += metric_rows([0.5, 0.6], trainable="full")  # not a rung: not plotted
    data = _build(tmp_path, "unfreezing_ladder", {"ladder": runs})
    ours = data[data["source"] == "ours"]
    finals = {k: v for k, v in _final_test(runs).items() if v["trainable"] != "full"}
    assert len(ours) == 8 and set(ours["run"]) == set(finals)
    for row in ours.itertuples():
        f = finals[row.run]
        assert row.test_accuracy_pct == pytest.approx(f["accuracy"] * 100)
        assert row.trained == unfreezing_ladder.LADDER[f["trainable"]]
        assert row.init == f"{f['init']} (gpt2 small)" and row.panel == "Bit XOR"
    ticks = data[data["source"] == "paper"].set_index(["init", "trainable"])["test_accuracy_pct"]
    assert ticks.to_dict() == {
        ("pretrained (gpt2 small)", "output_only"): 56,
        ("pretrained (gpt2 small)", "fpt"): 100,
        ("random (gpt2 small)", "output_only"): 50,
        ("random (gpt2 small)", "fpt"): 100,
    }


def test_lr_sweep_csv_is_each_sweep_run_and_each_fixed_lr_run(tmp_path):
    fixed, _ = two_protocols(tmp_path)
    fixed += curve(1e-3, [0.5, 0.9], task="listops", init="pretrained", size="small")  # no panel
    data = _build(
        tmp_path,
        "lr_sweep",
        {"protocol_paper": fixed},
        extra=[tmp_path / "selected.parquet"],
    )
    assert set(data["panel"]) == {"MNIST"}
    swept = data[data["protocol"] == "swept"]
    assert len(swept) == 4 and set(swept["model"]) == {"frozen pretrained"}
    got = {(r.seed, r.lr, r.step, round(r.test_accuracy_pct, 6)) for r in swept.itertuples()}
    assert got == {(s, lr, 10, round((p - 0.01) * 100, 6))
                   for s in (0, 1) for lr, p in ((1e-4, 0.95), (1e-3, 0.9))}  # fmt: skip
    stars = swept[swept["chosen"].astype(str) == "True"]
    assert sorted(stars["lr"]) == [1e-4, 1e-4]  # one star per seed, at the best val
    paper = data[data["protocol"] == "paper"].set_index("seed")
    assert len(paper) == 2 and paper["chosen"].isna().all()
    assert paper.loc[1, "test_accuracy_pct"] == pytest.approx(90) and paper.loc[1, "step"] == 10


def test_attention_csv_is_each_panels_matrix_in_long_form(tmp_path):
    rng = np.random.default_rng(0)
    extra = []
    for task, init in (("bit_xor", "pretrained"), ("bit_memory", "random")):
        att = rng.random((6, 6))
        spec = {"task": task, "backbone": "gpt2", "size": "small", "init": init, "seed": 3}
        p = tmp_path / f"{task}.npz"
        attention.save(
            {
                "attention": att,
                "answer_positions": np.array([4, 5]),
                "operand_positions": np.array([[0, 2], [1, 3]]),
                "accuracy": np.array(0.75),
                "n_examples": np.array(8),
                "step": np.array(100),
                "spec": np.array(json.dumps(spec)),
            },
            p,
        )
        extra.append(p)
    data = _build(tmp_path, "attention_maps", {}, extra=extra)
    assert len(data) == 2 * 2 * 6  # panels x answer tokens x positions
    for p in extra:
        m = np.load(p)
        spec = json.loads(str(m["spec"]))
        sub = data[data["task"] == spec["task"]]
        assert sub["panel"].nunique() == 1 and sub["panel"].iloc[0].startswith(
            {"bit_xor": "Bit XOR", "bit_memory": "Bit Memory"}[spec["task"]]
        )
        assert (sub["init"] == spec["init"]).all() and (sub["seed"] == 3).all()
        matrix = sub.pivot(index="query_position", columns="key_position", values="weight")
        np.testing.assert_allclose(matrix.loc[[4, 5]].to_numpy(), m["attention"][[4, 5]])
        boxed = set(zip(sub[sub["operand"]]["query_position"], sub[sub["operand"]]["key_position"],
                        strict=True))  # fmt: skip
        assert boxed == {(4, 0), (4, 2), (5, 1), (5, 3)}


@pytest.mark.parametrize("name", [t.name for t in FIGURES])
def test_an_empty_figure_writes_a_header_only_csv(tmp_path, name):
    data = _build(tmp_path, name, {})
    assert data.empty
