"""GPU leases on a workstation (fpt/gpu_lease.py), on CPU: fake GPU ids through FPT_GPUS,
real processes holding real flocks in a lease folder of the test's own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fpt import gpu_lease, grid
from tests.conftest import REPO

# A job: lease for `device`, write "<gpu> <CUDA_VISIBLE_DEVICES>" to <dir>/leased, hold the
# lease until <dir>/release exists, then write <dir>/released.
JOB = """
import logging, os, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from fpt import gpu_lease
folder = Path(sys.argv[2])
with gpu_lease.lease(sys.argv[1], label=folder.name, poll_s=0.05) as gpu:
    (folder / "leased.tmp").write_text(f"{gpu} {os.environ.get('CUDA_VISIBLE_DEVICES')}")
    (folder / "leased.tmp").rename(folder / "leased")
    while not (folder / "release").exists():
        time.sleep(0.02)
(folder / "released").touch()
"""


@pytest.fixture
def leases(tmp_path, monkeypatch):
    """A lease folder of this test's, two fake GPUs, one job per GPU, outside SLURM."""
    monkeypatch.setenv(gpu_lease.DIR_ENV, str(tmp_path / "leases"))
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "0,1")
    monkeypatch.setenv(gpu_lease.RUNS_PER_GPU_ENV, "1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path


class Job:
    def __init__(self, tmp: Path, name: str, device: str = "cuda"):
        self.dir = tmp / name
        self.dir.mkdir()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.dir / "stderr", "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", JOB, device, str(self.dir)], env=env, stderr=err
            )

    def leased(self, timeout: float = 10.0) -> tuple[str, str]:
        """(the leased GPU, the job's CUDA_VISIBLE_DEVICES), waiting for the lease."""
        end = time.monotonic() + timeout
        while not (self.dir / "leased").exists():
            assert self.proc.poll() is None, (self.dir / "stderr").read_text()
            assert time.monotonic() < end, f"{self.dir.name} leased nothing in {timeout} s"
            time.sleep(0.02)
        gpu, visible = (self.dir / "leased").read_text().split()
        return gpu, visible

    def has_leased(self) -> bool:
        return (self.dir / "leased").exists()

    def release(self) -> None:
        (self.dir / "release").touch()
        assert self.proc.wait(10) == 0, (self.dir / "stderr").read_text()

    def stderr(self) -> str:
        return (self.dir / "stderr").read_text()


@pytest.fixture
def jobs(leases):
    started: list[Job] = []

    def start(name: str, device: str = "cuda") -> Job:
        started.append(Job(leases, name, device))
        return started[-1]

    yield start
    for job in started:
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()


def test_two_concurrent_jobs_lease_different_gpus_and_see_only_theirs(jobs):
    a = jobs("a")
    assert a.leased() == ("0", "0")
    b = jobs("b")
    assert b.leased() == ("1", "1")  # CUDA_VISIBLE_DEVICES: the job's cuda:0 is its GPU


def test_runs_per_gpu_spreads_jobs_over_the_gpus_first_then_shares(jobs, monkeypatch):
    monkeypatch.setenv(gpu_lease.RUNS_PER_GPU_ENV, "2")
    got = [jobs(name).leased()[0] for name in "abcd"]
    assert got == ["0", "1", "0", "1"]


def test_a_job_waits_while_every_slot_is_held_naming_the_holders(jobs, monkeypatch):
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "3")  # one GPU, shared by two jobs
    monkeypatch.setenv(gpu_lease.RUNS_PER_GPU_ENV, "2")
    a, b = jobs("a"), jobs("b")
    assert a.leased()[0] == b.leased()[0] == "3"
    c = jobs("c")
    end = time.monotonic() + 10
    while "waiting for a GPU" not in c.stderr():
        assert time.monotonic() < end and c.proc.poll() is None, c.stderr()
        time.sleep(0.02)
    time.sleep(0.3)  # a few polls
    assert not c.has_leased()
    log = c.stderr()
    for holder in (a, b):
        assert f"pid {holder.proc.pid} " in log and f"run {holder.dir.name}," in log
    b.release()
    assert c.leased()[0] == "3"
    assert a.proc.poll() is None  # a held its slot throughout
    assert c.stderr().count("waiting for a GPU") == 1  # logged once, not at every poll


def test_a_job_killed_with_sigkill_frees_its_gpu(jobs, monkeypatch):
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "5")
    a = jobs("a")
    assert a.leased()[0] == "5"
    with pytest.raises(gpu_lease.GpuLeaseTimeout, match=rf"GPU 5 slot 0: pid {a.proc.pid} "):
        with gpu_lease.lease("cuda", "late", poll_s=0.02, timeout_s=0.2):
            pass
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    assert not (a.dir / "released").exists()
    with gpu_lease.lease("cuda", "next", poll_s=0.02, timeout_s=5) as gpu:
        assert gpu == "5"


def test_a_child_started_under_the_lease_sees_the_leased_gpu(leases, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # inherited: put back afterwards
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "1")
    code = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"
    with gpu_lease.lease("auto", "parent") as gpu:
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert gpu == "1" and child.stdout.strip() == "1"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_leases_held_in_one_process_are_distinct_and_released(leases):
    with gpu_lease.lease("cuda", "x") as first, gpu_lease.lease("cuda", "y") as second:
        assert (first, second) == ("0", "1")
        holder = (leases / "leases" / "gpu-0.0.lock").read_text()
        assert f'"pid": {os.getpid()}' in holder and '"run": "x"' in holder
    assert (leases / "leases" / "gpu-0.0.lock").read_text() == ""  # the name goes too
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with gpu_lease.lease("cuda", "z", timeout_s=0) as again:
        assert again == "0"


@pytest.mark.parametrize(
    "device, env",
    [
        ("cpu", {}),
        ("cuda", {"SLURM_JOB_ID": "77"}),  # a job given no GPU
        ("auto", {"SLURM_JOB_ID": "77", "CUDA_VISIBLE_DEVICES": "3"}),  # the job's one GPU
        ("auto", {gpu_lease.GPUS_ENV: "all", "CUDA_VISIBLE_DEVICES": ""}),  # no GPUs
        ("auto", {gpu_lease.GPUS_ENV: "all", "CUDA_VISIBLE_DEVICES": "-1"}),
    ],
)
def test_no_lease_on_cpu_in_slurm_or_without_gpus(leases, monkeypatch, device, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    with gpu_lease.lease(device, "run") as gpu:
        assert gpu is None
        assert os.environ.get("CUDA_VISIBLE_DEVICES") == before
    assert not (leases / "leases").exists()  # not a lock file made


def test_inside_a_slurm_allocation_of_several_gpus_jobs_lease_among_them(jobs, monkeypatch):
    """Snakemake run inside `salloc --gpus=2` (or sbatch on a whole node): SLURM set
    CUDA_VISIBLE_DEVICES to the allocation's GPUs; each job takes one of those, never all
    the same one. FPT_GPUS (the config's ids, for a workstation) does not apply."""
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    a, b = jobs("a"), jobs("b")
    assert {a.leased(), b.leased()} == {("4", "4"), ("6", "6")}


def test_the_lease_folder_is_the_slurm_jobs_own(monkeypatch):
    monkeypatch.delenv(gpu_lease.DIR_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    outside = gpu_lease.lease_dir()
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert gpu_lease.lease_dir() == outside.with_name(outside.name + "-slurm77")


def test_all_means_the_inherited_visible_gpus_else_every_gpu_torch_counts(monkeypatch):
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "all")
    monkeypatch.setattr(gpu_lease, "_count_gpus", lambda: 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_lease.visible_gpus() == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-8f3a")
    assert gpu_lease.visible_gpus() == ["2", "GPU-8f3a"]
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "4, 6")  # explicit ids win
    assert gpu_lease.visible_gpus() == ["4", "6"]


def test_the_config_travels_in_the_environment(monkeypatch):
    monkeypatch.delenv(gpu_lease.GPUS_ENV, raising=False)
    monkeypatch.delenv(gpu_lease.RUNS_PER_GPU_ENV, raising=False)
    assert (gpu_lease.configured_gpus(), gpu_lease.runs_per_gpu()) == (None, 1)
    gpu_lease.export([0, 2], 2)
    assert (os.environ[gpu_lease.GPUS_ENV], os.environ[gpu_lease.RUNS_PER_GPU_ENV]) == ("0,2", "2")
    assert (gpu_lease.configured_gpus(), gpu_lease.runs_per_gpu()) == (["0", "2"], 2)
    gpu_lease.export("all", 1)
    assert gpu_lease.configured_gpus() is None


@pytest.mark.parametrize(
    "key, value, message",
    [
        (gpu_lease.GPUS_ENV, "some", r"FPT_GPUS='some': expected 'all' or distinct GPU ids"),
        (gpu_lease.GPUS_ENV, "0,0", r"FPT_GPUS='0,0'"),
        (gpu_lease.RUNS_PER_GPU_ENV, "0", r"FPT_RUNS_PER_GPU='0': expected an integer >= 1"),
    ],
)
def test_a_malformed_environment_is_refused(leases, monkeypatch, key, value, message):
    monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=message):
        with gpu_lease.lease("cuda", "run"):
            pass


EXPERIMENTS = {"e": {"grid": {"task": ["bit_xor"], "backbone": ["gpt2"]}}}


def test_config_defaults_all_gpus_one_run_each():
    config = grid.validate_config({"experiments": EXPERIMENTS})
    assert (config["gpus"], config["runs_per_gpu"]) == ("all", 1)
    config = grid.validate_config({"experiments": EXPERIMENTS, "gpus": [0, 2], "runs_per_gpu": 2})
    assert (config["gpus"], config["runs_per_gpu"]) == ([0, 2], 2)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"runs_per_gpu": 0}, r"at runs_per_gpu: 0 is less than the minimum of 1"),
        ({"gpus": "some"}, r"at gpus: 'some' does not match '\^all\$'"),
        ({"gpus": []}, r"at gpus: \[\] should be non-empty"),
        ({"gpus": [-1]}, r"at gpus\[0\]: -1 is less than the minimum of 0"),
        ({"gpus": [0, 0]}, r"at gpus: \[0, 0\] has non-unique elements"),
    ],
)
def test_bad_gpu_config_is_refused_naming_the_key(bad, message):
    with pytest.raises(grid.ConfigError, match=message):
        grid.validate_config({"experiments": EXPERIMENTS, **bad})


def test_fpt_train_trains_under_the_lease_and_not_on_cpu(leases, monkeypatch):
    import fpt.train
    from fpt import cli

    seen = []
    monkeypatch.setattr(
        fpt.train, "train", lambda *a, **k: seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
    )
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "1")
    for device in ("cuda", "cpu"):
        out = leases / device
        argv = ["train", "--task", "bit_xor", "--backbone", "gpt2", "--device", device]
        assert cli.main([*argv, "--out", str(out)]) == 0
    assert seen == ["1", None]


@pytest.mark.slow
def test_snakemake_gives_every_gpu_slot_a_training_job(tmp_path):
    """Three fake GPUs (the config's `gpus`; no CUDA here, so each job trains on the CPU
    under its lease) and four runs, with only --cores: three jobs train at once, each on its
    own GPU, and none starts before a slot is free. The workflow says how many GPUs it found.
    (Jobs one at a time would all lease GPU 0, the first free one; a fourth job started
    beside the three would log that it waits for a GPU.)"""
    import yaml

    from tests.conftest import SNAKEMAKE

    config = {
        "label": "gpu slots",
        "results_dir": "results",
        "figures_dir": "figures",
        "device": "auto",
        "gpus": [0, 1, 2],
        "train_threads": 4,
        "defaults": {
            "backbone": "gpt2",
            "size": "tiny",
            "init": "random",
            "steps": 120,
            "batch_size": 8,
            "eval_every": 120,
            "ckpt_every": 120,
            "options": {"val_size": 16, "test_size": 16},
        },
        "experiments": {
            "table1": {
                "grid": {
                    "task": ["bit_xor"],
                    "backbone": ["gpt2"],
                    "init": ["random"],
                    "trainable": ["fpt"],
                    "seed": [0, 1, 2, 3],
                }
            }
        },
    }
    (tmp_path / "gpus.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    env[gpu_lease.DIR_ENV] = str(tmp_path / "leases")
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--configfile", str(tmp_path / "gpus.yaml")]
    out = subprocess.run(
        [*cmd, "--cores", "4", "results/metrics.parquet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert (
        "fpt: 3 GPU(s) found (0,1,2), 1 run(s) per GPU: up to 3 training jobs at a time, "
        "1 thread(s) each" in out.stderr
    )
    assert "fpt plan: 4 runs" in out.stderr
    logs = [p.read_text() for p in (tmp_path / "results/logs/train").rglob("*.log")]
    leased = [re.findall(r"leased GPU (\d+)", text) for text in logs]
    assert len(logs) == 4 and all(len(ids) == 1 for ids in leased), logs
    assert {ids[0] for ids in leased} == {"0", "1", "2"}
    assert not any("waiting for a GPU" in text for text in logs)
