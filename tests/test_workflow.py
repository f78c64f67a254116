"""The Snakemake workflow: a dry run of the paper config, and the .test grid end to end."""

import re
import subprocess

import pandas as pd
import pytest

from fpt.analysis.stats import final_rows
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
    assert jobs["table1_fpt_vs_full"] == 1 and jobs["convergence"] == 1


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
    assert df["run"].nunique() == 7
    assert set(df["backbone"]) == {"gpt2", "minilm"}
    for name in [
        "table1_fpt_vs_full.md",
        "table1_fpt_vs_full.tex",
        "table1_fpt_vs_full.csv",
        "convergence.pdf",
        "convergence.png",
    ]:
        assert (work / "figures/test" / name).stat().st_size > 0, name
    # The table holds the runs' own numbers: mean final test accuracy per model and task.
    table = pd.read_csv(work / "figures/test/table1_fpt_vs_full.csv")
    finals = final_rows(df, "test")
    for row in table.itertuples():
        sel = finals[
            (finals.task == row.task)
            & (finals.backbone == row.backbone)
            & (finals.init == row.init)
            & (finals.trainable == row.trainable)
        ]
        assert row.n == len(sel)
        if row.n == 0:  # a model/task pair the grid does not train: the cell says "not run"
            continue
        assert row.accuracy_mean == pytest.approx(sel["accuracy"].mean())
    fpt_xor = table[
        (table.task == "bit_xor") & (table.role == "FPT") & (table.backbone == "gpt2")
    ].iloc[0]
    assert fpt_xor.n == 2 and fpt_xor.paper == 100
    md = (work / "figures/test/table1_fpt_vs_full.md").read_text()
    assert f"{fpt_xor.accuracy_mean * 100:.1f} ± " in md
    assert (work / "figures/test/convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_finished_grid_plans_nothing(local_test_grid):
    _, cmd = local_test_grid
    out = subprocess.run([*cmd, "-n"], capture_output=True, text=True, check=True)
    assert "Nothing to be done" in out.stdout + out.stderr
