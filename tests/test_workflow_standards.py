"""Workflow standards: `snakemake --lint` and snakefmt clean, wildcard-free fetch targets,
cores from the default profile, train resources from the config only (no profile override),
and the train benchmarks gathered by rule resource_table."""

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO, SNAKEMAKE


def _run(args, cwd=REPO, **kw):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, **kw)


def _jobs(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def _dry(tmp_path, *args):
    out = _run([*SNAKEMAKE, "-n", "--directory", str(tmp_path), *args])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def _paper_weights() -> int:
    return 7  # gpt2 small/medium/large, vit, bert, t5, longformer (see test_workflow)


def test_snakemake_lint_is_clean():
    out = _run([*SNAKEMAKE, "--lint"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]  # a lint exits 1


def test_snakefmt_check_passes():
    exe = shutil.which("snakefmt") or str(REPO / ".venv/bin/snakefmt")
    out = _run([exe, "--check", "workflow"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.slow
def test_fetch_weights_and_datasets_are_targets(tmp_path):
    """The README's login-node command: wildcard-free targets, planning only downloads."""
    jobs = _jobs(_dry(tmp_path, "--cores", "1", "fetch_weights", "fetch_mnist", "fetch_cifar10"))
    assert jobs == {
        "download_weights": _paper_weights(),
        "fetch_weights": 1,
        "fetch_mnist": 1,
        "fetch_cifar10": 1,
        "fetch_data": 2,  # the one download rule, once per dataset; fetch_<d> names it
        "total": _paper_weights() + 5,
    }, jobs


@pytest.mark.slow
def test_fetch_plans_everything_the_config_downloads(tmp_path):
    jobs = _jobs(_dry(tmp_path, "--cores", "1", "fetch"))
    assert jobs == {
        "download_weights": _paper_weights(),
        "fetch_data": 4,  # mnist, cifar10, listops, homology
        "fetch": 1,
        "total": _paper_weights() + 5,
    }, jobs
    jobs = _jobs(_dry(tmp_path, "--cores", "1", "fetch_listops", "fetch_homology"))
    assert jobs == {"fetch_listops": 1, "fetch_homology": 1, "fetch_data": 2, "total": 4}, jobs


@pytest.mark.slow
def test_fetch_of_a_generated_listops_config_makes_it(tmp_path):
    """demo.yaml's ListOps is generated offline: `fetch` makes it, and downloads nothing
    the demo does not use."""
    out = _dry(tmp_path, "--cores", "1", "fetch", "--configfile", str(REPO / "demo.yaml"))
    jobs = _jobs(out)
    assert jobs["make_listops"] >= 1
    assert jobs == {"make_listops": jobs["make_listops"], "fetch": 1, "total": jobs["total"]}


@pytest.mark.slow
def test_no_cores_needed_the_default_profile_gives_them(tmp_path):
    out = _dry(tmp_path, "table1_fpt_vs_full")
    assert "cores have to be specified" not in out
    assert _jobs(out)["table1_fpt_vs_full"] == 1
    text = (REPO / "workflow/profiles/default/config.yaml").read_text()
    assert re.search(r"^cores: all$", text, re.M)


def _train_resources(out: str) -> list[dict[str, str]]:
    blocks = re.findall(r"^rule train:\n(.*?)(?=^\[|^rule |\Z)", out, re.M | re.S)
    res = []
    for b in blocks:
        (line,) = re.findall(r"^\s+resources: (.*)$", b, re.M)
        res.append(dict(kv.split("=", 1) for kv in line.split(", ")))
    return res


@pytest.mark.slow
def test_train_resources_under_the_slurm_profile_are_the_configs(tmp_path):
    from collections import Counter

    import yaml

    from fpt import grid
    from fpt.workflow_support import train_resources

    # config.yaml: train_mem_mb / train_runtime_min auto, each run's estimate (fpt.plan)
    cfg = grid.load_config(REPO / "config.yaml")
    out = _dry(tmp_path, "--workflow-profile", str(REPO / "workflow/profiles/slurm"))
    res = _train_resources(out)
    assert res
    want = Counter(
        (r["mem_mb"], r["runtime"])  # attempt 1
        for r in (train_resources([s], cfg) for s in grid.expand(cfg).runs.values())
    )
    assert Counter((int(r["mem_mb"]), int(r["runtime"])) for r in res) == want
    for r in res:
        assert int(r["gpu"]) == 1, r  # device auto -> one GPU
    # the profiles hold no train resource of their own (the config is the one answer)
    for prof in ("workflow/profiles/slurm", ".test/slurm-profile"):
        profile = yaml.safe_load((REPO / prof / "config.yaml").read_text())
        assert "set-resources" not in profile, prof
        assert not {"mem_mb", "runtime", "gpu"} & set(profile["default-resources"]), prof


@pytest.mark.slow
def test_train_benchmarks_and_resource_table_are_planned(tmp_path):
    from fpt import grid

    n = len(grid.expand(grid.load_config(REPO / "config.yaml")).runs)
    out = _dry(tmp_path, "--cores", "1", "all")
    jobs = _jobs(out)
    assert jobs["resource_table"] == 1 and jobs["train"] == n
    assert len(re.findall(r"^\s+benchmark: results/benchmarks/train/task=.*\.tsv$", out, re.M)) == n
    assert "output: results/benchmarks/train.tsv" in out


def test_resource_table_joins_benchmarks_with_runs(tmp_path):
    import pandas as pd

    from fpt.workflow_support import BENCHMARK_COLUMNS, resource_table

    benches = []
    for i in range(2):
        p = tmp_path / f"b{i}.tsv"
        p.write_text(
            "\t".join(BENCHMARK_COLUMNS)
            + f"\n{10 + i}\t0:00:1{i}\t{100 + i}\t1\t1\t1\t0\t0\t50\t9\n"
        )
        benches.append(p)
    runs = [
        {"run": f"r{i}", "task": "bit_xor", "backbone": "gpt2", "size": "small"} for i in range(2)
    ]
    out, log = tmp_path / "t.tsv", tmp_path / "log/t.log"
    resource_table(benches, runs, out, log)
    df = pd.read_csv(out, sep="\t")
    assert list(df.columns[:6]) == ["run", "task", "backbone", "size", "s", "h:m:s"]
    assert df["s"].tolist() == [10, 11] and df["max_rss"].tolist() == [100, 101]
    assert "2 runs" in log.read_text() and "wrote" in log.read_text()


def test_job_log_records_warnings_and_failures(tmp_path):
    import logging
    import warnings

    from fpt.workflow_support import job_log

    log = tmp_path / "x.log"
    with pytest.raises(RuntimeError), job_log(log, "thing"):
        logging.getLogger("fpt.some").info("hello")
        warnings.warn("careful", UserWarning, stacklevel=1)
        raise RuntimeError("boom")
    text = log.read_text()
    assert "start: thing" in text and "hello" in text and "careful" in text and "boom" in text
