"""The Snakemake workflow: a dry run of the paper config, and the .test grid end to end."""

import os
import re
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.stats import t as scipy_t

from fpt.analysis.stats import final_rows
from fpt.analysis.targets import TARGETS
from fpt.metrics import read_run
from tests.conftest import REPO, SNAKEMAKE

pytestmark = pytest.mark.slow  # Snakemake end to end: not in the fast lane


def _jobs(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_of_the_paper_config_plans_every_run(tmp_path):
    out = subprocess.run(
        [*SNAKEMAKE, "-n", "--cores", "8", "--directory", str(tmp_path), "all"],
        capture_output=True,
        text=True,
        check=True,
    )
    jobs = _jobs(out.stdout)
    from fpt import grid

    assert jobs["train"] == len(grid.expand(grid.load_config(REPO / "config.yaml")).runs)
    # each dataset is fetched once, on the submit host, before the runs that read it
    assert jobs["fetch_data"] == 4  # mnist, cifar10, listops, homology
    # weights fetched once each on the submit host: gpt2 small/medium/large, vit, bert, t5,
    # longformer (stats init reuses the pretrained folder; bit_memory and lstm need none)
    assert jobs["download_weights"] == 7
    # every table and figure is one local job, whether or not the config has its runs
    for name in TARGETS:
        assert jobs[name] == 1, name
    assert jobs["attention"] == 4  # Bit XOR / Bit Memory x pretrained / random GPT-2 small


def test_invalid_config_fails_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiments:\n  e:\n    grid: {task: [bit_xr], backbone: [gpt2]}\n")
    out = subprocess.run(
        [*SNAKEMAKE, "-n", "--cores", "1", "--directory", str(tmp_path), "--configfile", str(bad)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "experiments.e.grid.task[0]: 'bit_xr' is not one of" in out.stdout + out.stderr


def test_test_grid_trains_collects_and_renders(local_test_grid):
    work, _ = local_test_grid
    df = read_run(work / "results/test/metrics.parquet")
    assert df["run"].nunique() == 9  # table1's 7 + protocol_swept's two lrs
    assert set(df["backbone"]) == {"gpt2", "minilm"}
    figs = work / "figures/test"
    for target in TARGETS.values():  # every table and figure renders, with content
        out = target.outputs(figs)
        if target.kind == "table":
            md = out["md"].read_text()
            assert md.startswith("### ") and "\n|---|" in md, target.name  # title, table
            csv = pd.read_csv(out["csv"])
            assert len(csv) > 0, target.name  # the tidy numbers behind the table
            assert out["tex"].read_text().lstrip().startswith("\\begin{table}"), target.name
        else:
            img = plt.imread(out["png"])  # a decodable picture, not blank
            assert img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01, target.name
            assert out["pdf"].read_bytes()[:5] == b"%PDF-"
    assert "label: test grid" in (figs / "config.yaml").read_text()


def _t_interval(values: list[float]) -> float | None:
    """Half-width of the 95% t-interval, computed here from scratch (not fpt's stats)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
    return float(scipy_t.ppf(0.975, n - 1)) * sd / n**0.5


def test_table1_holds_each_runs_own_last_test_accuracy(local_test_grid):
    """Table 1's cells against the per-run files read directly (the last test evaluation of
    each run folder's metrics.parquet): means, 95% intervals and seed counts."""
    work, _ = local_test_grid
    lasts = []
    for f in (work / "results/test/runs").rglob("metrics.parquet"):
        d = pq.read_table(f).to_pandas()
        test = d[d["split"] == "test"]
        lasts.append(test.loc[test["step"].idxmax()])
    lasts = pd.DataFrame(lasts)
    table = pd.read_csv(work / "figures/test/table1_fpt_vs_full.csv")
    cells = table[table["n"] > 0]
    assert len(cells) >= 4  # FPT gpt2 x2 tasks, FPT minilm, full and frozen random gpt2
    for row in cells.itertuples():
        sel = lasts[
            (lasts.task == row.task)
            & (lasts.backbone == row.backbone)
            & (lasts["size"] == row.size)
            & (lasts.init == row.init)
            & (lasts.trainable == row.trainable)
            & (lasts.patience == 0)  # table1's runs, not protocol_swept's early-stopped ones
        ]
        accs = sel["accuracy"].tolist()
        assert row.n == len(accs) == sel["seed"].nunique(), row
        assert row.accuracy_mean == pytest.approx(sum(accs) / len(accs), abs=1e-12)
        half = _t_interval(accs)
        if half is None:
            assert pd.isna(row.ci95)
        else:
            assert row.ci95 == pytest.approx(half, abs=1e-12)
    fpt_xor = table[
        (table.task == "bit_xor") & (table.row == "FPT") & (table.backbone == "gpt2")
    ].iloc[0]
    assert fpt_xor.n == 2 and fpt_xor.paper == 100
    md = (work / "figures/test/table1_fpt_vs_full.md").read_text()
    expected = f"{fpt_xor.accuracy_mean * 100:.1f} ± {fpt_xor.ci95 * 100:.1f} (n=2)"
    assert expected in md
    assert "| Full LSTM | not in test grid | 60.9 |" in md  # no LSTM runs: said plainly


def test_attention_map_of_trained_bit_xor_peaks_on_the_operands(local_test_grid):
    """Frozen MiniLM that learned Bit XOR: each answer token's first-layer attention (heads
    and test examples averaged) is largest on one of the two bits it XORs. The map comes
    from the final checkpoint; its accuracy equals the run's final test accuracy."""
    work, _ = local_test_grid
    (npz,) = (work / "results/test/attention").glob("task=bit_xor/backbone=minilm/**/*.npz")
    m = np.load(npz)
    att = m["attention"][m["answer_positions"]]
    for row, operands in zip(att, m["operand_positions"], strict=True):
        assert row.argmax() in operands, (row.round(2), operands)
    run = npz.parent.relative_to(work / "results/test/attention")
    final = final_rows(read_run(work / "results/test/runs" / run / "metrics.parquet"))
    assert float(m["accuracy"]) == pytest.approx(final["accuracy"].item()) and m["accuracy"] == 1.0


def _plan_after(cmd: list[str], module: Path, edit) -> str:
    """The dry-run plan after `edit(module)`; the module (in the workflow copy the grid ran
    from, never a tracked file) gets its text and times back afterwards."""
    text, before = module.read_text(), module.stat()
    try:
        edit(module)
        return subprocess.run(
            [*cmd, "-n", "all"], capture_output=True, text=True, check=True
        ).stdout
    finally:
        module.write_text(text)
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))


def _edit(module: Path) -> None:
    module.write_text(module.read_text() + "# an edit\n")


def test_editing_one_plot_reruns_exactly_that_plot(local_test_grid, workflow_copy):
    """Rerun triggers: an edited plotting module (newer and with other content: Snakemake
    also compares checksums) plans its figure and nothing else."""
    _, cmd = local_test_grid
    module = workflow_copy / "fpt/analysis/figures/train_vs_test.py"
    jobs = _jobs(_plan_after(cmd, module, _edit))
    assert jobs == {"train_vs_test": 1, "all": 1, "total": 2}, jobs


def test_touching_a_module_without_changing_it_reruns_nothing(local_test_grid, workflow_copy):
    _, cmd = local_test_grid
    module = workflow_copy / "fpt/analysis/figures/train_vs_test.py"
    out = _plan_after(cmd, module, lambda m: os.utime(m))  # newer, same content
    assert "Nothing to be done" in out, out[-2000:]


def test_editing_a_shared_helper_reruns_its_targets_and_no_training(local_test_grid, workflow_copy):
    """stats.py is a shared helper of every table and figure (targets.SHARED_*_CODE)."""
    _, cmd = local_test_grid
    jobs = _jobs(_plan_after(cmd, workflow_copy / "fpt/analysis/stats.py", _edit))
    assert jobs == {**{name: 1 for name in TARGETS}, "all": 1, "total": len(TARGETS) + 1}, jobs
    # a helper only the tables use leaves the figures alone
    jobs = _jobs(_plan_after(cmd, workflow_copy / "fpt/analysis/render.py", _edit))
    tables = [t.name for t in TARGETS.values() if t.kind == "table"]
    assert jobs == {**{n: 1 for n in tables}, "all": 1, "total": len(tables) + 1}, jobs


def test_report_is_one_self_contained_html_file(local_test_grid, tmp_path):
    _, cmd = local_test_grid
    report = tmp_path / "report.html"
    subprocess.run([*cmd, "--report", str(report)], capture_output=True, text=True, check=True)
    html = report.read_text()
    assert html.startswith("<!doctype html>") and len(html) > 100_000
    assert "<script src=" not in html  # nothing fetched from the network
    for target in TARGETS.values():  # every table and figure, with its caption
        assert target.caption[:40] in html, target.name
    assert "config.yaml" in html


def test_a_finished_grid_plans_nothing(local_test_grid):
    _, cmd = local_test_grid
    out = subprocess.run([*cmd, "-n"], capture_output=True, text=True, check=True)
    assert "Nothing to be done" in out.stdout + out.stderr
