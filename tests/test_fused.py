"""Fused runs (fpt.fused, fpt.packs): a pack of runs trains each as if it ran alone (metrics
within float tolerance of the lone runs', early stopping per run, dropout per run), resumes
after kill -9, and the grid packs only runs that can share one process."""

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from fpt import checkpoint, grid
from fpt.fused import train_pack
from fpt.metrics import read_run
from fpt.packs import pack_runs, why_not_packable
from fpt.spec import RunSpec
from fpt.train import train

# Frozen pretrained MiniLM (the packaged weights) with the reference's dropout on: the
# pack's runs differ in seed and lr.
BASE = RunSpec(
    task="bit_xor",
    backbone="minilm",
    size="l6",
    init="pretrained",
    steps=24,
    batch_size=4,
    eval_every=8,
    ckpt_every=4,
    eval_batch_size=64,
    options={"val_size": 32, "test_size": 64},
)
SPECS = [
    dataclasses.replace(BASE, seed=1),
    dataclasses.replace(BASE, seed=2),
    dataclasses.replace(BASE, seed=3, lr=3e-4),
]
VALUES = ["loss", "accuracy"]
KEYS = ["run", "step", "samples", "split", "seed", "lr", "stop_step", "best_step", "diverged"]


def _same_run(fused: pd.DataFrame, lone: pd.DataFrame) -> None:
    """The same rows; losses and accuracies within float tolerance (on the lone run's
    ~100 eval examples, one flipped answer would move accuracy by 0.01)."""
    pd.testing.assert_frame_equal(fused[KEYS], lone[KEYS])
    np.testing.assert_allclose(fused[VALUES].to_numpy(), lone[VALUES].to_numpy(), atol=1e-5)


@pytest.fixture(scope="module")
def lone(tmp_path_factory):
    out = tmp_path_factory.mktemp("lone")
    return [
        read_run(train(s, out / str(i), device="cpu", threads=1, handle_signals=False))
        for i, s in enumerate(SPECS)
    ]


def test_a_pack_of_three_gives_each_run_its_lone_metrics(tmp_path, lone):
    outs = [tmp_path / str(i) for i in range(3)]
    metrics = train_pack(SPECS, outs, device="cpu", threads=1, handle_signals=False)
    for m, alone, out in zip(metrics, lone, outs, strict=True):
        assert m == out / "metrics.parquet"
        _same_run(read_run(m), alone)
        assert (out / "spec.json").exists() and not (out / "progress.parquet").exists()
    # the runs really learned something different from each other (no shared stream)
    finals = {read_run(m)["loss"].iloc[-1] for m in metrics}
    assert len(finals) == 3


def test_early_stopping_ends_each_run_of_a_pack_on_its_own(tmp_path):
    """Random backbone, one seed, three lrs (a pack that shares frozen weights): with
    patience 1 the runs stop at their own steps, as they do alone, and leave the pack."""
    base = dataclasses.replace(
        BASE, backbone="gpt2", size="tiny", init="random", steps=60, eval_every=4, patience=1
    )
    specs = [dataclasses.replace(base, lr=lr) for lr in (3e-3, 1e-3, 1e-4)]
    fused = train_pack(
        specs, [tmp_path / f"f{i}" for i in range(3)], device="cpu", threads=1, handle_signals=False
    )
    stops = []
    for i, (s, m) in enumerate(zip(specs, fused, strict=True)):
        alone = read_run(
            train(s, tmp_path / f"l{i}", device="cpu", threads=1, handle_signals=False)
        )
        got = read_run(m)
        _same_run(got, alone)
        stops.append(got["stop_step"].iloc[0])
    assert min(stops) < 60, "no run stopped early: the test shows nothing"


def _pack_cli(specs, results) -> list[str]:
    args = [a for s in specs for a in ("--spec", json.dumps(s.to_json()))]
    return [
        sys.executable,
        *("-m", "fpt", "train-pack", *args),
        *("--results", str(results), "--device", "cpu", "--threads", "1"),
    ]


@pytest.mark.slow  # a subprocess killed and rerun: ~30 s on 2 cores
def test_a_killed_pack_resumes_as_a_pack_or_alone_and_ends_as_the_lone_runs(tmp_path, lone):
    proc = subprocess.Popen(
        _pack_cli(SPECS, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    ckpts = [tmp_path / s.path / "checkpoint" / "ckpt.pt" for s in SPECS]
    t0 = time.monotonic()
    while not all(c.exists() for c in ckpts):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() - t0 < 180
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    steps = [
        checkpoint.load_latest(c.parent, s.to_json())["step"]
        for c, s in zip(ckpts, SPECS, strict=True)
    ]
    assert all(0 < st < BASE.steps for st in steps)
    # two runs resume as a pack; the third alone (`fpt train`): a pack's checkpoint holds the
    # run's own dropout generator as its torch RNG state, so either way ends as the lone run
    done = subprocess.run(_pack_cli(SPECS[1:], tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out0 = tmp_path / SPECS[0].path
    cli0 = [sys.executable, "-m", "fpt", "train", *SPECS[0].cli_args(), "--out", str(out0)]
    alone0 = subprocess.run(
        [*cli0, "--device", "cpu", "--threads", "1"], capture_output=True, text=True
    )
    assert alone0.returncode == 0, alone0.stderr[-3000:]
    for s, st, alone in zip(SPECS, steps, lone, strict=True):
        assert f"resuming {s.path} from step {st}" in done.stderr + alone0.stderr
        _same_run(read_run(tmp_path / s.path / "metrics.parquet"), alone)


def test_runs_that_cannot_share_a_process_are_refused(tmp_path):
    other_task = dataclasses.replace(SPECS[1], task="bit_memory")
    assert "differ in more than seed and lr" in why_not_packable([SPECS[0], other_task])
    lstm = RunSpec(task="bit_xor", backbone="lstm", size="tiny", init="random")
    assert "lstm" in why_not_packable([lstm, dataclasses.replace(lstm, lr=1e-4)])
    assert "twice" in why_not_packable([SPECS[0], SPECS[0]])
    with pytest.raises(ValueError, match="cannot train as one pack"):
        train_pack([SPECS[0], other_task], [tmp_path / "a", tmp_path / "b"], device="cpu")


def test_the_grid_packs_pretrained_seeds_and_random_lrs_of_one_seed():
    config = grid.validate_config(yaml.safe_load(open("demo.yaml")))
    assert grid.expand(config).packs == {}  # pack_size 1: every run lone, as before
    g = grid.expand({**config, "pack_size": 3})
    packed = [r for runs in g.packs.values() for r in runs]
    assert len(packed) == len(set(packed)) and set(g.lone_runs()) == set(g.runs) - set(packed)
    for runs in g.packs.values():
        specs = [g.runs[r] for r in runs]
        assert 2 <= len(specs) <= 3 and why_not_packable(specs) is None
        if specs[0].init != "pretrained":  # frozen weights drawn from the seed: one seed only
            assert len({s.seed for s in specs}) == 1
    # the swept protocol's lrs of one random-init seed pack together
    assert any(g.runs[rs[0]].init == "random" for rs in g.packs.values())
    # pretrained runs of different seeds pack together (the test grid has seeds 0 and 1)
    t = grid.expand(
        {**grid.validate_config(yaml.safe_load(open(".test/config.yaml"))), "pack_size": 3}
    )
    assert any(
        t.runs[rs[0]].init == "pretrained" and len({t.runs[r].seed for r in rs}) > 1
        for rs in t.packs.values()
    )
    # names are stable (a hash of the member paths) and packs never exceed pack_size
    assert pack_runs(g.runs, 3) == g.packs
    assert all(len(rs) <= 2 for rs in pack_runs(g.runs, 2).values())


@pytest.mark.slow  # the .test grid's training jobs through Snakemake: ~1 min on 2 cores
def test_snakemake_trains_packs_as_the_lone_runs_it_replaces(tmp_path, local_test_grid):
    """pack_size 2 on the .test grid: pack jobs (one output per run) and lone jobs side by
    side; every run's metrics are those the lone-run workflow wrote, and the resource table
    has one row per job."""
    lone_work, cmd = local_test_grid
    results = yaml.safe_load(open(".test/config.yaml"))["results_dir"]
    wd = cmd.index("--directory") + 1
    target = f"{results}/benchmarks/train.tsv"  # every training job
    packed = [*cmd[:wd], str(tmp_path), *cmd[wd + 1 :], "pack_size=2"]
    packed.insert(packed.index("--cores"), target)  # targets before --config's values
    out = subprocess.run(packed, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "train-pack" in out.stdout + out.stderr
    g = grid.expand(
        {**grid.validate_config(yaml.safe_load(open(".test/config.yaml"))), "pack_size": 2}
    )
    assert g.packs, "the test grid has no packs: the test shows nothing"
    for run in g.runs:
        got = read_run(tmp_path / results / "runs" / run / "metrics.parquet")
        _same_run(got, read_run(lone_work / results / "runs" / run / "metrics.parquet"))
    jobs = pd.read_csv(tmp_path / results / "benchmarks" / "train.tsv", sep="\t")
    assert sorted(jobs["runs_in_job"]) == sorted(
        [1] * len(g.lone_runs()) + [len(r) for r in g.packs.values()]
    )
    for pack in g.packs:
        assert (tmp_path / results / "logs" / "train" / f"{pack}.log").exists()


def test_bench_fused_times_the_pack_and_the_lone_loops():
    from fpt.bench.fused import bench_fused, pack_specs

    spec = RunSpec(task="bit_xor", backbone="gpt2", size="tiny", init="random")
    assert why_not_packable(pack_specs(spec, 3, "shared")) is None
    assert len({s.seed for s in pack_specs(spec, 3, "per_run")}) == 3
    out = bench_fused(spec, 2, "per_run", warmup=1, iters=1)
    assert out["runs"] == 2 and out["lone_run_steps_per_s"] > 0 and out["fused_run_steps_per_s"] > 0
