"""The .test grid through the project's SLURM profile on a real one-node cluster
(slurmctld + slurmd, started by .ci/run via .ci/slurm/up.sh)."""

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml

from fpt.metrics import read_run
from fpt.spec import RunSpec
from fpt.train import train
from tests.conftest import REPO, SNAKEMAKE
from tests.test_faults import CONFIG as FAULT_CONFIG


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(state in out.stdout for state in ("idle", "mix", "alloc"))


# In CI the cluster is part of the test environment and must be up; elsewhere the test
# runs when a cluster is there (start one with .ci/slurm/up.sh) and is skipped otherwise.
REQUIRED = os.environ.get("FPT_REQUIRE_SLURM") == "1"
pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm_up():
    if _cluster_up():
        return
    if REQUIRED:
        pytest.fail("FPT_REQUIRE_SLURM=1 but no idle SLURM node answers sinfo; run .ci/slurm/up.sh")
    pytest.skip("no SLURM cluster here (start one with .ci/slurm/up.sh)")


def _slurm_cmd(work, configfile, *config: str) -> list[str]:
    """Snakemake through the CI cluster's profile, in `work`, with `configfile`."""
    cmd = [*SNAKEMAKE, "--workflow-profile", str(REPO / ".test" / "slurm-profile")]
    cmd += ["--directory", str(work), "--configfile", str(configfile)]
    return cmd + (["--config", *config] if config else [])


def test_test_grid_through_the_slurm_profile(slurm_up, tmp_path, tiny_weights_dir, local_test_grid):
    cmd = _slurm_cmd(tmp_path, REPO / ".test" / "config.yaml", f"weights_dir={tiny_weights_dir}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]

    # Every training run went through sbatch and was run by slurmd to completion.
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    from fpt import grid

    n_runs = len(grid.expand(grid.load_config(REPO / ".test" / "config.yaml")).runs)
    assert len(job_ids) == n_runs == 9, log[-3000:]  # table1's 7 + protocol_swept's 2
    states = dict(
        line.split()
        for line in subprocess.run(
            ["squeue", "--states=all", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        if line.strip()
    )
    assert states == {j: "COMPLETED" for j in job_ids}, states  # each job, by its id

    # Same content as the local run: every run's evaluations, bit for bit (CPU, same seeds).
    cols = ["run", "step", "split", "loss", "accuracy", "diverged", "trainable_params"]
    local_work, _ = local_test_grid
    ours = (
        read_run(tmp_path / "results/test/metrics.parquet")[cols]
        .sort_values(cols[:3])
        .reset_index(drop=True)
    )
    local = (
        read_run(local_work / "results/test/metrics.parquet")[cols]
        .sort_values(cols[:3])
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(ours, local, check_exact=True)
    # ... and the same tables, to the character
    for name in ["table1_fpt_vs_full.md", "table14_protocols.md"]:
        assert (tmp_path / "figures/test" / name).read_text() == (
            local_work / "figures/test" / name
        ).read_text(), name


def test_dead_snakemake_recipe_on_slurm(slurm_up, tmp_path):
    """README, "Snakemake itself died", followed as written on the real cluster: Snakemake is
    killed while a training job runs; its orphaned jobs are found with squeue and cancelled
    (they checkpoint on SIGTERM); unlock; the same command again. Every run completes, the
    interrupted one resumes, and its metrics equal an uninterrupted run's bit for bit."""
    config = {**FAULT_CONFIG, "defaults": {**FAULT_CONFIG["defaults"], "steps": 600}}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))  # long enough that the cancel lands mid-run
    cmd = _slurm_cmd(tmp_path, cfg)
    runs = tmp_path / "results" / "runs"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def training_checkpointed() -> bool:
        return any(not (p.parents[1] / "metrics.parquet").exists() for p in runs.rglob("ckpt.pt"))

    t0 = time.monotonic()
    while not training_checkpointed():
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() - t0 < 600, "no training job started"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake dies; its sbatch jobs live on
    proc.wait()
    log.close()

    # the recipe: find the orphaned jobs (squeue --me) and cancel them
    orphans = _squeue_ids()
    assert orphans, "the training job should outlive Snakemake"
    subprocess.run(["scancel", *orphans], check=True)
    t0 = time.monotonic()
    while _squeue_ids():
        assert time.monotonic() - t0 < 120, "cancelled jobs did not end"
        time.sleep(0.5)

    unfinished = [
        p.parents[1]
        for p in runs.rglob("ckpt.pt")
        if not (p.parents[1] / "metrics.parquet").exists()
    ]
    assert unfinished, "every run ended before the cancel: lengthen the runs"

    subprocess.run([*cmd, "--unlock"], check=True, capture_output=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]

    df = read_run(tmp_path / "results" / "metrics.parquet")
    assert df["run"].nunique() == 2 and df.groupby("run")["step"].max().eq(600).all()
    for folder in unfinished:  # each cancelled run continued from its checkpoint
        run = str(folder.relative_to(runs))
        log_text = (tmp_path / "results/logs/train" / f"{run}.log").read_text()
        assert f"resuming {run} from step" in log_text, log_text[-2000:]
    cols = ["step", "split", "loss", "accuracy", "diverged"]
    for folder in unfinished:  # the resumed runs equal uninterrupted ones, bit for bit
        run = str(folder.relative_to(runs))
        got = df[df["run"] == run]
        spec = RunSpec.from_json(json.loads((runs / run / "spec.json").read_text()))
        alone = read_run(train(spec, tmp_path / "alone" / run, device="cpu", threads=1,
                               handle_signals=False))  # fmt: skip
        pd.testing.assert_frame_equal(
            got[cols].sort_values(cols[:2]).reset_index(drop=True),
            alone[cols].sort_values(cols[:2]).reset_index(drop=True),
            check_exact=True,
        )


def _squeue_ids() -> list[str]:
    out = subprocess.run(["squeue", "--me", "-h", "-o", "%i"], capture_output=True, text=True)
    return out.stdout.split()
