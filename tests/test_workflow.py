"""The Snakemake workflow: a dry run of the paper config, and the .test grid end to end."""

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fpt.analysis.stats import final_rows
from fpt.analysis.targets import TARGETS
from fpt.metrics import read_run
from tests.conftest import REPO, SNAKEMAKE


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
    for rule in ("fetch_mnist", "fetch_cifar10", "fetch_listops", "fetch_homology"):
        assert jobs[rule] == 1, rule
    # weights fetched once each on the submit host: gpt2 small/medium/large, vit, bert, t5,
    # longformer (stats init reuses the pretrained folder; bit_memory and lstm need none)
    assert jobs["fetch_weights"] == 7
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
    for target in TARGETS.values():  # every table and figure renders, non-empty
        for path in target.outputs(work / "figures/test").values():
            assert path.stat().st_size > 0, path
            if path.suffix == ".png":
                assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if path.suffix == ".pdf":
                assert path.read_bytes()[:5] == b"%PDF-"
    assert "label: test grid" in (work / "figures/test/config.yaml").read_text()
    # The table holds the runs' own numbers: mean final test accuracy per model and task.
    table = pd.read_csv(work / "figures/test/table1_fpt_vs_full.csv")
    finals = final_rows(read_run(work / "results/test/experiments/table1/metrics.parquet"))
    for row in table.itertuples():
        sel = finals[
            (finals.task == row.task)
            & (finals.backbone == row.backbone)
            & (finals.init == row.init)
            & (finals.trainable == row.trainable)
        ]
        assert row.n == len(sel)
        if row.n == 0:  # a model/task pair the grid does not train
            continue
        assert row.accuracy_mean == pytest.approx(sel["accuracy"].mean())
    fpt_xor = table[
        (table.task == "bit_xor") & (table.row == "FPT") & (table.backbone == "gpt2")
    ].iloc[0]
    assert fpt_xor.n == 2 and fpt_xor.paper == 100
    md = (work / "figures/test/table1_fpt_vs_full.md").read_text()
    assert f"{fpt_xor.accuracy_mean * 100:.1f} ± " in md
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


def test_editing_one_plot_reruns_exactly_that_plot(local_test_grid):
    """Rerun triggers: an edited plotting module (newer and with other content: Snakemake
    also compares checksums) plans its figure and nothing else."""
    _, cmd = local_test_grid
    module = Path(TARGETS["train_vs_test"].code()[0])
    text, before = module.read_text(), module.stat()
    try:
        module.write_text(text + "# an edit\n")
        out = subprocess.run([*cmd, "-n", "all"], capture_output=True, text=True, check=True)
    finally:
        module.write_text(text)
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    jobs = _jobs(out.stdout)
    assert jobs == {"train_vs_test": 1, "all": 1, "total": 2}, jobs


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
