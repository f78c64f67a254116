"""A task is one module: the example task docs/examples/parity_task.py, copied to a folder
outside the package (the parity of four bits read from a file that its own dataset's fetch
function writes, no network), and a config listing it in `task_modules` are all it takes
for the task to be validated by the config schema, fetched (`fpt fetch-data`, Snakemake rule
fetch_data and target fetch_<dataset>), trained, and shown under its label in the tables."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from fpt import grid
from fpt.tasks import DATASETS, TASKS
from tests.conftest import REPO, SNAKEMAKE

MODULE = "fpt_toy_parity_task"  # a name no other test or package uses
TASK, DATASET, FOLDER, LABEL = "toy_parity", "toy_parity_bits", "toy-parity-bits", "Toy parity"

# The example task users copy (docs/extending.md): tested here as it is shipped.
EXAMPLE = REPO / "docs" / "examples" / "parity_task.py"


def _config(**extra):
    settings = {"steps": 20, "batch_size": 16, "micro_batch_size": 16, "eval_every": 10}
    return {
        "label": "toy",
        "experiments": {
            "table1": {
                "grid": {
                    "task": [TASK],
                    "backbone": ["gpt2"],
                    "size": ["tiny"],
                    "init": ["random"],
                    "trainable": ["fpt"],
                },
                "settings": {**settings, "ckpt_every": 10},
            }
        },
        **extra,
    }


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The example module in a folder of its own on sys.path; the registries as they were after."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / f"{MODULE}.py").write_text(EXAMPLE.read_text())
    monkeypatch.syspath_prepend(str(mods))
    tasks, datasets = dict(TASKS), dict(DATASETS)
    try:
        yield mods
    finally:
        sys.modules.pop(MODULE, None)
        TASKS.clear()
        TASKS.update(tasks)
        DATASETS.clear()
        DATASETS.update(datasets)


def _env(mods, **extra):
    path = os.pathsep.join([str(mods), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **extra}


def test_a_task_module_is_validated_fetched_trained_and_tabulated(toy, tmp_path):
    from fpt.analysis import targets
    from fpt.tasks import required_files, task_label, task_order
    from fpt.train import train

    # (a) schema: unknown until its module is listed; then in the enum; typos still refused
    with pytest.raises(grid.ConfigError, match=rf"'{TASK}' is not one of"):
        grid.validate_config(_config())
    with pytest.raises(grid.ConfigError, match=r"task_modules\[0\].*no_such_task_module"):
        grid.validate_config(_config(task_modules=["no_such_task_module"]))
    config = grid.validate_config(_config(task_modules=[MODULE]))
    assert TASK in grid.load_schema()["$defs"]["task"]["enum"]
    bad = _config(task_modules=[MODULE])
    bad["experiments"]["table1"]["grid"]["task"] = ["toy_parityy"]
    with pytest.raises(grid.ConfigError, match=r"'toy_parityy' is not one of.*toy_parity"):
        grid.validate_config(bad)
    assert task_label(TASK) == LABEL and task_order([TASK, "bit_xor"]) == ["bit_xor", TASK]

    # (b) fetch: `fpt fetch-data` in a fresh process knows the dataset through
    # FPT_TASK_MODULES (what the Snakemake jobs get), and writes the marker the runs need
    data = tmp_path / "data"
    marker = data / FOLDER / ".complete"
    assert required_files(TASK, {}, data) == [str(marker)]
    out = subprocess.run(
        [sys.executable, "-m", "fpt", "fetch-data", DATASET, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        env=_env(toy, FPT_TASK_MODULES=MODULE),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == str(marker)
    assert f"{FOLDER}/bits.txt" in marker.read_text()

    # (c) train a tiny random GPT-2 for 20 steps
    (spec,) = grid.expand(config).specs("table1")
    metrics = train(
        spec, tmp_path / "run", device="cpu", data_dir=data, threads=1, handle_signals=False
    )
    df = pd.read_parquet(metrics)
    assert set(df["task"]) == {TASK} and {"train", "val", "test"} <= set(df["split"])

    # (d) tabulate: Table 1 has a column pair for the toy task, after the paper's tasks
    out = targets.TARGETS["table1_fpt_vs_full"].outputs(tmp_path / "figs")
    targets.build("table1_fpt_vs_full", {"table1": metrics}, out, label="toy")
    header = out["md"].read_text().splitlines()
    header = next(line for line in header if line.startswith("| Model"))
    assert f"{LABEL} (ours)" in header
    assert header.index("Homology (ours)") < header.index(f"{LABEL} (ours)")
    row = next(line for line in out["md"].read_text().splitlines() if "Frozen random" in line)
    assert "(n=1)" in row  # the toy run's cell is filled


@pytest.mark.slow
def test_snakemake_plans_fetches_and_trains_a_task_module(toy, tmp_path):
    """The workflow with only a config listing the module: the dry run plans the dataset's
    fetch_data job and the run, the named target fetch_<dataset> really fetches it, and the
    run trains (the jobs' `python -m fpt ...` import the module through FPT_TASK_MODULES,
    which the workflow sets from the config)."""
    import yaml

    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump(_config(task_modules=[MODULE], device="cpu")))
    work = tmp_path / "work"
    opts = ["--cores", "1", "--directory", str(work), "--configfile", str(cfg)]
    env = _env(toy)
    env.pop("FPT_TASK_MODULES", None)  # the config alone says which modules
    dry = subprocess.run([*SNAKEMAKE, "-n", "all", *opts], capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert f"python -m fpt fetch-data {DATASET} --data-dir data" in dry.stdout
    assert f"task={TASK}/" in dry.stdout
    target = f"fetch_{DATASET}"
    run = subprocess.run([*SNAKEMAKE, target, *opts], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (work / "data" / FOLDER / ".complete").is_file()
    # and its run trains as a job (`python -m fpt train` imports the module the same way)
    (spec,) = grid.expand(grid.validate_config(_config(task_modules=[MODULE]))).specs("table1")
    metrics = f"results/runs/{spec.path}/metrics.parquet"
    run = subprocess.run([*SNAKEMAKE, metrics, *opts], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert set(pd.read_parquet(work / metrics)["task"]) == {TASK}
