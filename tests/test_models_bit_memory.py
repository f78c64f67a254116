"""init=bit_memory: the two-stage chain (a Bit Memory pretraining run, then runs that load
its backbone frozen) in the grid, the Snakemake DAG, and end to end on a tiny grid."""

import subprocess
import sys

import pytest
import torch
import yaml

from fpt import checkpoint, grid
from fpt.models import BackboneUnavailable, build_model
from fpt.models.init import check_source
from fpt.spec import RunSpec
from fpt.tasks import make_task
from tests.conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]

CONFIG = {
    "device": "cpu",
    "train_threads": 1,
    "defaults": {
        "backbone": "gpt2",
        "size": "tiny",
        "steps": 6,
        "batch_size": 4,
        "eval_every": 3,
        "ckpt_every": 3,
        "eval_batch_size": 16,
        "options": {"val_size": 16, "test_size": 16},
    },
    "tasks": {"bit_memory": {"steps": 8, "options": {"n_bits": 20, "patch": 5}}},
    "experiments": {
        "modality": {"grid": {"task": ["bit_xor"], "backbone": ["gpt2"], "init": ["bit_memory"]}},
        "table1": {
            "grid": {
                "task": ["bit_memory"],
                "backbone": ["gpt2"],
                "init": ["random"],
                "trainable": ["full"],
            }
        },
    },
}


def test_the_source_run_is_derived_once_and_shared():
    g = grid.expand(grid.validate_config(CONFIG))
    (dep,) = [s for s in g.specs("modality") if s.init == "bit_memory"]
    src = g.runs[g.sources[dep.path]]
    assert (src.task, src.init, src.trainable) == ("bit_memory", "random", "full")
    assert (src.backbone, src.size, src.depth, src.seed) == (
        dep.backbone,
        dep.size,
        dep.depth,
        dep.seed,
    )
    assert src.steps == 8 and src.options == {
        "val_size": 16,
        "test_size": 16,
        "n_bits": 20,
        "patch": 5,
    }
    # the same run as table1's fully trained transformer on Bit Memory: trained once
    assert g.experiments["table1"] == [src.path]
    assert len(g.runs) == 2


@pytest.fixture
def workflow(tmp_path):
    """A fresh work dir per test: the dry run must not see the outputs the chain test wrote
    (with one shared dir it planned nothing when it ran second)."""
    work = tmp_path
    cfg = work / "config.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    cmd = [*SNAKEMAKE, "--configfile", str(cfg), "--cores", "2", "--directory", str(work)]
    return work, cmd


@pytest.mark.slow  # end to end, minutes on 2 cores: not in the fast lane
def test_dry_run_shows_the_two_stage_chain(workflow):
    work, cmd = workflow
    out = subprocess.run(
        [*cmd, "-n", "-p", "results/metrics.parquet"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    g = grid.expand(grid.validate_config(CONFIG))
    ((dep, src),) = g.sources.items()
    assert f"--init-from results/runs/{src}" in out.stdout
    assert f"results/runs/{src}/metrics.parquet" in out.stdout
    assert out.stdout.count("rule train:") == 2


@pytest.mark.slow  # end to end, minutes on 2 cores: not in the fast lane
def test_chain_runs_end_to_end(workflow):
    work, cmd = workflow
    out = subprocess.run([*cmd, "results/metrics.parquet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    g = grid.expand(grid.validate_config(CONFIG))
    ((dep_path, src_path),) = g.sources.items()
    dep, src_dir = g.runs[dep_path], work / "results" / "runs" / src_path
    assert (work / "results" / "runs" / dep_path / "metrics.parquet").exists()

    # The dependent run's frozen backbone is the source's trained one.
    state = checkpoint.load_latest(src_dir / "checkpoint", g.runs[src_path].to_json())
    torch.manual_seed(0)
    model = build_model(
        make_task("bit_xor"), "gpt2", "tiny", "bit_memory", "fpt", init_from=src_dir
    )
    key = "backbone.model.h.1.mlp.c_fc.weight"
    assert torch.equal(model.state_dict()[key], state["model"][key])
    assert not model.backbone.model.h[1].mlp.c_fc.weight.requires_grad

    # A folder holding another run is refused, naming what was expected.
    with pytest.raises(BackboneUnavailable, match="needs a Bit Memory run"):
        check_source(dep, work / "results" / "runs" / dep_path)
    with pytest.raises(BackboneUnavailable, match="--init-from"):
        build_model(make_task("bit_xor"), "gpt2", "tiny", "bit_memory", "fpt")


def test_lstm_has_no_pretrained_init_in_configs():
    bad = {
        "experiments": {
            "e": {"grid": {"task": ["bit_xor"], "backbone": ["lstm"], "init": ["stats"]}}
        }
    }
    with pytest.raises(grid.ConfigError, match="lstm has no public checkpoint"):
        grid.validate_config(bad)
    ok = RunSpec(
        task="bit_xor", backbone="lstm", size="l3", init="random", trainable="full", lr=3e-4
    )
    assert ok.path.startswith("task=bit_xor/backbone=lstm/size=l3/init=random/trainable=full")
