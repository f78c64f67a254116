"""The .test grid through the project's SLURM profile on a real one-node cluster
(slurmctld + slurmd, started by .ci/run via .ci/slurm/up.sh), its stand-in GPUs asked for as
a real cluster's, and the profiles' one place for the training jobs' site settings."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from fpt import attempt_log
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
pytestmark = pytest.mark.slow
# the tests that need the cluster (the profile checks below it do not)
cluster = pytest.mark.slurm


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


@cluster
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


@cluster
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


def _jobs(*names: str, states: str = "") -> dict[str, str]:
    """Job id -> state of this user's jobs named `names` (a Snakemake's `SLURM run ID`),
    as the README's recipe lists them; with states="all", finished ones too."""
    cmd = ["squeue", "--me", "-h", "-o", "%i %T", "--name", ",".join(names)]
    out = subprocess.run(cmd + (["--states", states] if states else []), capture_output=True,
                         text=True, check=True)  # fmt: skip
    return dict(line.split() for line in out.stdout.splitlines() if line.strip())


def _run_id(log_path) -> str:
    """The `SLURM run ID: fpt_<uuid>` a Snakemake printed: its jobs' name."""
    match = re.search(r"SLURM run ID: (\S+)", log_path.read_text())
    assert match, log_path.read_text()[-3000:]
    return match.group(1)


def _wait_until(pred, what: str, timeout: float, proc=None, log_path=None) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc is not None:
            assert proc.poll() is None, f"{what}: snakemake ended\n" + log_path.read_text()[-3000:]
        assert time.monotonic() - t0 < timeout, f"timed out waiting: {what}"
        time.sleep(0.5)


@cluster
@pytest.mark.parametrize("orphans_are", ["cancelled", "waited for"])
def test_a_resubmitted_job_of_a_run_still_training_fails_fast_naming_it(
    slurm_up, tmp_path, orphans_are
):
    """Issue 17: Snakemake is SIGKILLed while its training job A runs; `snakemake --unlock`
    and the same command again. Its job B for that run must not train it too: B fails within
    the lock wait, its log naming job A (`fpt train` exits 73, nothing in the run touched).
    Then the README's recipe (stop that Snakemake, list the orphans by job name, cancel them
    or wait, unlock, rerun) completes every run; the run was never trained by two processes
    at once, and its log keeps every attempt in order (A's first lines included)."""
    steps = 1500  # A trains ~75 s alone, twice as long as B takes to be refused
    config = {
        **FAULT_CONFIG,
        "defaults": {**FAULT_CONFIG["defaults"], "steps": steps},
        "experiments": {"table1": {"grid": {"task": ["bit_memory"], "backbone": ["gpt2"]}}},
    }
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))  # one run (1 CPU): B finds the node's other CPU
    cmd = _slurm_cmd(tmp_path, cfg)
    env = {**os.environ, "FPT_LOCK_WAIT": "2"}  # sbatch exports it: B waits 2 s, not 30
    runs, logs = tmp_path / "results" / "runs", tmp_path / "results" / "logs"
    t0 = time.monotonic()

    def phase(what: str) -> None:
        print(f"{time.monotonic() - t0:6.1f} s  {what}")

    def snakemake(name: str) -> tuple[subprocess.Popen, object]:
        path = tmp_path / f"{name}.log"
        proc = subprocess.Popen(cmd, stdout=open(path, "w"), stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
        return proc, path

    def holder() -> dict:
        text = "".join(p.read_text() for p in runs.rglob(".lock"))
        return json.loads(text) if text.strip() else {}

    # 1. The first Snakemake's job A trains the run, holding its lock; Snakemake is killed.
    first, first_log = snakemake("first")
    _wait_until(lambda: "SLURM run ID" in first_log.read_text(), "run id", 120, first, first_log)
    first_id = _run_id(first_log)

    def a_trains() -> bool:
        jobs = _jobs(first_id)
        held = holder().get("slurm_job_id")
        return list(jobs.values()) == ["RUNNING"] and held in jobs and any(runs.rglob("ckpt.pt"))

    _wait_until(a_trains, "job A RUNNING, holding the lock", 600, first, first_log)
    (job_a,) = _jobs(first_id)
    host, pid_a = holder()["host"], holder()["pid"]
    (run_dir,) = [p.parent for p in runs.rglob(".lock")]
    run = str(run_dir.relative_to(runs))
    run_log = logs / "train" / f"{run}.log"
    os.killpg(first.pid, signal.SIGKILL)  # Snakemake dies; its sbatch job lives on
    first.wait()
    phase(f"snakemake killed; job {job_a} trains on")

    # 2. Unlock, the same command again: its job B for the run fails fast, naming job A.
    subprocess.run([*cmd, "--unlock"], check=True, capture_output=True, env=env)
    second, second_log = snakemake("second")
    _wait_until(lambda: "SLURM run ID" in second_log.read_text(), "run id", 120, second,
                second_log)  # fmt: skip
    second_id = _run_id(second_log)

    def b_failed() -> bool:
        return "FAILED" in _jobs(second_id, states="all").values()

    _wait_until(b_failed, "job B to fail", 300, second, second_log)
    phase("job B failed")
    assert _jobs(first_id) == {job_a: "RUNNING"}, "job A must outlive job B: more steps"
    text = run_log.read_text()
    job_b = min((j for j, s in _jobs(second_id, states="all").items() if s == "FAILED"), key=int)
    assert f"SLURM job {job_b} at " in text, text[-3000:]  # B's attempt header ...
    b_part = text.split(f"SLURM job {job_b} at ")[1]
    refusal = f"is being trained by another process: host {host}, pid {pid_a}, SLURM job {job_a},"
    assert refusal in b_part and f"cancel it: scancel {job_a};" in b_part, b_part[-3000:]
    assert "Nothing in the run folder was read or written" in b_part
    elapsed = subprocess.run(["squeue", "--states=all", "-h", "-o", "%M", "-j", job_b],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    minutes, seconds = map(int, elapsed.split(":"))  # M:SS below an hour
    assert 60 * minutes + seconds < 90, elapsed  # fast: the job's start-up and a 2 s wait
    assert "took the lock" not in text and "resuming" not in text  # B never held it

    # 3. The README recipe: stop that Snakemake (Ctrl-C), list the orphans by their job
    #    names (the SLURM run IDs), cancel them (they checkpoint on SIGTERM) or wait for
    #    them, unlock, and the same command again.
    os.killpg(second.pid, signal.SIGINT)
    second.wait(timeout=300)
    phase("second snakemake stopped")
    orphans = _jobs(first_id, second_id)
    assert orphans.get(job_a) == "RUNNING", orphans
    if orphans_are == "cancelled":
        for name in (first_id, second_id):  # scancel --name takes one name
            subprocess.run(["scancel", "--me", "--name", name], check=True)
    _wait_until(lambda: not _jobs(first_id, second_id), f"the orphans {orphans_are}", 300)
    phase(f"orphans {orphans_are}")
    metrics = run_dir / "metrics.parquet"
    if orphans_are == "waited for":
        # A finished after the second Snakemake had ended, which removed A's (still empty)
        # benchmark folder: the train rule makes it again, so A completes and keeps its
        # metrics (else A's own Snakemake deleted them as the output of a failed job).
        assert _jobs(first_id, states="all") == {job_a: "COMPLETED"}
        finished = metrics.stat().st_mtime_ns
    subprocess.run([*cmd, "--unlock"], check=True, capture_output=True, env=env)
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert third.returncode == 0, (third.stdout + third.stderr)[-4000:]
    phase("third snakemake done")

    # Every run complete, every evaluation once.
    df = read_run(tmp_path / "results" / "metrics.parquet")
    assert df["run"].unique().tolist() == [run] and df["step"].max() == steps
    assert not df.duplicated(["step", "split"]).any()
    # One log, every attempt in order: A (from its first line), B refused, then (A
    # cancelled) C resuming where A stopped; the training lines never interleave (never two
    # trainers at once), and the log keeps its second name (fpt.attempt_log).
    text = run_log.read_text()
    assert attempt_log.history(run_log).read_text() == text
    headers = re.findall(r"==== fpt train attempt: .* SLURM job (\d+) at ", text)
    assert text.startswith(f"==== fpt train attempt: host {host} pid {pid_a} SLURM job {job_a}")
    logged = [int(s) for s in re.findall(rf" step (\d+)/{steps} ", text)]
    assert logged == sorted(set(logged)) and logged[-1] == steps, logged
    if orphans_are == "waited for":  # A's run is done: nothing trained again
        assert headers == [job_a, job_b], headers
        assert "rule train:" not in third.stdout + third.stderr
        assert metrics.stat().st_mtime_ns == finished
        return
    assert headers[:2] == [job_a, job_b] and len(headers) == 3, headers
    assert [int(h) for h in headers] == sorted(int(h) for h in headers), headers
    a_part, c_part = text.split(f"SLURM job {headers[-1]} at ")
    assert "received signal 15" in a_part, a_part[-2000:]  # A checkpointed on scancel's TERM
    assert f"resuming {run} from step" in c_part and f"step {steps}/{steps}" in c_part


# --- The training jobs' site settings: the profiles' default-resources, one place ----------

# The rules of a workflow and which run where: local (the submit host) or submitted.
_RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
snakefile, configfile, workdir = map(Path, sys.argv[1:4])
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    wf = api.workflow(ResourceSettings(), ConfigSettings(configfiles=[configfile]),
                      snakefile=snakefile, workdir=workdir)._workflow
    # Workflow.is_local without its local_exec (this workflow runs on no executor)
    print(json.dumps({r.name: r.group is None and (r.name in wf._localrules or r.norun
                      or r.is_template_engine) for r in wf.rules}))
"""


def test_every_submitted_rule_is_a_training_rule(tmp_path):
    """The profiles give their site settings (partition, account, GPU model, the SIGUSR1
    warning) as default-resources, i.e. to every job they submit: which must be training
    jobs only, rule train and the fused packs' train_pack_<hash> rules. study.yaml has packs."""
    cmd = [sys.executable, "-c", _RULES, str(REPO / "workflow/Snakefile"),
           str(REPO / "study.yaml"), str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    local = json.loads(out.stdout.strip().splitlines()[-1])
    submitted = sorted(name for name, is_local in local.items() if not is_local)
    packs = [n for n in submitted if re.fullmatch(r"train_pack_[0-9a-f]{12}", n)]
    assert packs, "study.yaml should have packs"
    assert submitted == sorted(["train", *packs]), submitted
    assert len(local) > len(submitted) + 20  # downloads, collect, selection, every target


def test_lone_and_packed_training_jobs_get_the_site_settings(tmp_path):
    """A dry run of study.yaml (lone runs and packs) through the SLURM profile: every
    training job carries the profile's site settings; its memory and time stay the config's.
    Both profiles keep them in default-resources only (the CI profile's reach the cluster in
    test_lone_and_packed_jobs_ask_for_gpus_as_on_a_real_cluster)."""
    for profile in ("workflow/profiles/slurm", ".test/slurm-profile"):
        prof = yaml.safe_load((REPO / profile / "config.yaml").read_text())
        assert "set-resources" not in prof, profile  # nothing overrides the rules' resources
        defaults = prof["default-resources"]
        assert not {"mem_mb", "runtime", "gpu", "mem_mb_per_cpu"} & set(defaults), profile
        assert "--signal=USR1@" in defaults["slurm_extra"], profile
    profile = REPO / "workflow/profiles/slurm"
    cmd = [*SNAKEMAKE, "-n", "--workflow-profile", str(profile), "--directory", str(tmp_path),
           "--configfile", str(REPO / "study.yaml")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    pattern = r"^rule (train|train_pack_[0-9a-f]+):\n(.*?)(?=^\[|^rule |\Z)"
    resources = {}
    for rule, block in re.findall(pattern, out.stdout, re.M | re.S):
        (line,) = re.findall(r"^\s+resources: (.*)$", block, re.M)
        resources.setdefault(rule, []).append(dict(kv.split("=", 1) for kv in line.split(", ")))
    assert "train" in resources and any(r.startswith("train_pack_") for r in resources)
    for rule, each in resources.items():
        for res in each:
            assert res["slurm_extra"] == "--signal=USR1@120", (rule, res)
            assert res["mem_mb"] == "4000" and res["runtime"] == "60", (rule, res)  # study.yaml's


# --- GPUs: stand-in GPUs on the CI node, asked for as on a real cluster ---------------------

# device auto: the jobs ask for a GPU (gpu=1 -> sbatch --gpus=1), find no CUDA in it and
# train on the CPU, so their metrics equal a CPU run's. Two lrs of one random backbone and
# seed pack (pack_size 2); the Bit Memory run trains lone. Two jobs, at once (jobs: 2): one on
# each of the node's two GPUs.
GPU_CONFIG = {
    "results_dir": "results",
    "figures_dir": "figures",
    "device": "auto",
    "train_threads": 1,
    "train_mem_mb": 1000,
    "train_runtime_min": 10,
    "pack_size": 2,
    "defaults": {
        "backbone": "gpt2",
        "size": "tiny",
        "init": "random",
        "steps": 40,
        "batch_size": 8,
        "eval_every": 20,
        "ckpt_every": 20,
        "options": {"val_size": 64, "test_size": 128},
    },
    "experiments": {
        "table1": {
            "grid": [
                {"task": ["bit_xor"], "backbone": ["gpt2"], "lr": [1.0e-3, 1.0e-2]},
                {"task": ["bit_memory"], "backbone": ["gpt2"]},
            ]
        }
    },
}


def _scontrol(job: str) -> dict[str, str]:
    """scontrol -d show job: every Key=Value field (MinJobAge keeps finished jobs listed)."""
    out = subprocess.run(["scontrol", "-d", "show", "job", job], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


@cluster
def test_gpu_jobs_get_a_gpu_each(slurm_up):
    """.ci/slurm/smoke.sh: a CPU job, then two --gpus=1 jobs at once, each with its own GPU
    and CUDA_VISIBLE_DEVICES (in the batch script and in an srun step)."""
    out = subprocess.run(["bash", str(REPO / ".ci/slurm/smoke.sh")], capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "GPU jobs" in out.stdout and "on GPUs" in out.stdout, out.stdout  # the node has GPUs


@cluster
def test_lone_and_packed_jobs_ask_for_gpus_as_on_a_real_cluster(slurm_up, tmp_path):
    """The CI profile as a cluster user's (partition gpu, the SIGUSR1 warning, --gpus=1 from
    device auto): a lone run and a fused pack are submitted with every site setting, each
    job gets a GPU of the node, and every run trains to the metrics of a CPU run, bit for
    bit."""
    import torch

    from fpt import grid
    from fpt.fused import train_pack

    if torch.cuda.is_available():
        pytest.skip("device auto would train on this machine's GPU, not its CPU")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(GPU_CONFIG))
    g = grid.expand(grid.load_config(cfg))
    packed = [r for runs in g.packs.values() for r in runs]
    lone = [r for r in g.runs if r not in packed]
    assert len(g.packs) == 1 and len(packed) == 2 and len(lone) == 1, g.packs
    (pack,) = g.packs
    pack_rule = f"train_{pack.replace('-', '_')}"

    # --verbose: the plugin logs each sbatch call (scontrol does not show --signal); no
    # retries: each job is submitted once, and a job that fails fails the test at once
    cmd = [*_slurm_cmd(tmp_path, cfg), "--verbose", "--retries", "0", "collect"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    if out.returncode != 0:  # the jobs' own logs say why (e.g. srun refusing a GPU step)
        errors = [
            f"{j.name}: {line}"
            for j in sorted((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
            for line in j.read_text().splitlines()
            if re.search(r"error|Traceback", line, re.I)
        ]
        pytest.fail(log[-3000:] + "\n--- errors in the jobs' SLURM logs:\n" + "\n".join(errors))

    # One sbatch call per training job, no retry, each with the site settings and a GPU.
    calls = re.findall(r"^sbatch call: (sbatch .*)$", log, re.M)
    by_rule = {}
    for call in calls:
        (comment,) = re.findall(r" --comment (\S+)", call)
        by_rule.setdefault(comment.split("_wildcards_")[0], []).append(call)
        for flag in (" -p gpu ", " --signal=USR1@60 ", " --gpus=1", " -t 10 ", " --mem 1000 "):
            assert flag in call, (flag, call[:800])
    assert {r: len(c) for r, c in by_rule.items()} == {"rule_train": 1, f"rule_{pack_rule}": 1}

    # What Slurm made of them: each job COMPLETED in partition gpu with one GPU of the node.
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    assert len(job_ids) == 2, log[-3000:]
    comments = []
    for job in job_ids:
        info = _scontrol(job)
        assert info["JobState"] == "COMPLETED" and info["Partition"] == "gpu", info
        assert info["TresPerJob"] == "gres:gpu:1" and info["JOB_GRES"] == "gpu:1", info
        assert info["TimeLimit"] == "00:10:00", info
        comments.append(info["Comment"].split("_wildcards_")[0])
    assert sorted(comments) == sorted(["rule_train", f"rule_{pack_rule}"])

    # Trained on the CPU (no CUDA behind the stand-in GPU), to a CPU run's metrics exactly:
    # the lone runs as `fpt train`, the pack as `fpt train-pack`, here in this process.
    runs = tmp_path / "results" / "runs"
    alone = tmp_path / "alone"
    here = {r: train(g.runs[r], alone / r, device="auto", threads=1, handle_signals=False)
            for r in lone}  # fmt: skip
    fused = train_pack([g.runs[r] for r in packed], [alone / r for r in packed],
                       device="auto", threads=1, handle_signals=False)  # fmt: skip
    here.update(zip(packed, fused, strict=True))
    cols = ["step", "split", "loss", "accuracy", "diverged"]
    for run, metrics in here.items():
        got = read_run(runs / run / "metrics.parquet")
        assert set(got["device"]) == {"cpu"}, run
        pd.testing.assert_frame_equal(
            got[cols].sort_values(cols[:2]).reset_index(drop=True),
            read_run(metrics)[cols].sort_values(cols[:2]).reset_index(drop=True),
            check_exact=True,
        )
