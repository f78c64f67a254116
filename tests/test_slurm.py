"""The .test grid through the project's SLURM profile on a real one-node cluster
(slurmctld + slurmd, started by .ci/run via .ci/slurm/up.sh)."""

import os
import re
import shutil
import subprocess

import pandas as pd
import pytest

from fpt.metrics import read_run
from tests.conftest import REPO, SNAKEMAKE


def _cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(state in out.stdout for state in ("idle", "mix", "alloc"))


# In CI the cluster is part of the test environment and must be up; elsewhere the test
# runs when a cluster is there (start one with .ci/slurm/up.sh) and is skipped otherwise.
REQUIRED = os.environ.get("FPT_REQUIRE_SLURM") == "1"
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_up():
    if _cluster_up():
        return
    if REQUIRED:
        pytest.fail("FPT_REQUIRE_SLURM=1 but no idle SLURM node answers sinfo; run .ci/slurm/up.sh")
    pytest.skip("no SLURM cluster here (start one with .ci/slurm/up.sh)")


def test_test_grid_through_the_slurm_profile(slurm_up, tmp_path, tiny_weights_dir, local_test_grid):
    cmd = [
        *SNAKEMAKE,
        "--workflow-profile",
        str(REPO / ".test" / "slurm-profile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        "--config",
        f"weights_dir={tiny_weights_dir}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]

    # Every training run went through sbatch and was run by slurmd to completion.
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    from fpt import grid

    n_runs = len(grid.expand(grid.load_config(REPO / ".test" / "config.yaml")).runs)
    assert len(job_ids) == n_runs == 9, log[-3000:]  # table1's 7 + protocol_swept's 2
    states = subprocess.run(
        ["squeue", "--states=all", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    assert {line.split()[1] for line in states if line.strip()} == {"COMPLETED"}

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
    pd.testing.assert_frame_equal(ours, local)
    for name in ["table1_fpt_vs_full.md", "convergence.png"]:
        assert (tmp_path / "figures/test" / name).stat().st_size > 0
