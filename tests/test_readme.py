"""A README that cannot rot: every command in its code blocks is run here, on a fresh copy of
the checkout (`workflow_copy`), for real where that is cheap, as a dry run (`-n`) where it
trains or downloads. A command the test does not know fails the test, so a new README command
needs a line here; the few that cannot run on this machine are listed with the reason."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # Snakemake and training subprocesses: minutes on 2 cores

FPT = [sys.executable, "-m", "fpt"]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
INSTALL = [  # the README's setup line, before the command it ends with
    ["python3.11", "-m", "venv", ".venv"],
    [".", ".venv/bin/activate"],
    ["pip", "install", "torch==2.13.0", "-e", ".[offline,test]"],
]

# Commands that cannot run as written here, and what the test does instead.
NOT_HERE = {
    "fpt fetch-weights": "downloads from the Hugging Face hub: no network here; the weights "
    "rule is dry-run through `snakemake fetch_weights` instead",
    "python -m pytest": "the suite itself (this test runs inside it)",
    "fpt bench": "the full benchmark takes minutes: run with --warmup 1 --iters 1 --eval-examples 4",
    "squeue": "needs a SLURM cluster: tests/test_slurm.py::test_a_resubmitted_job_of_a_run_"
    "still_training_fails_fast_naming_it follows the recipe on the CI's (squeue --me --name)",
    "scancel": "needs a SLURM cluster and a dead Snakemake's jobs: tests/test_slurm.py::test_a_"
    "resubmitted_job_of_a_run_still_training_fails_fast_naming_it cancels them by name",
}


def readme_blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w*)\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def readme_commands() -> list[list[str]]:
    """Shell commands of the README's bash blocks as words: continuations joined, comments
    dropped."""
    out = []
    for lang, body in readme_blocks():
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(words)
    return out


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"{shlex.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def _handle(words: list[str], cwd: Path, grid: tuple[Path, list[str]]) -> str:
    """Run one README command the way this test runs it; return how (for the failure text)."""
    if "&&" in words:
        parts, part = [], []
        for w in [*words, "&&"]:
            if w == "&&":
                parts.append(part)
                part = []
            else:
                part.append(w)
        assert parts[:-1] == INSTALL, f"an unknown chain: {words}"
        ci = (REPO / ".ci/run").read_text()
        assert "pip install -q torch==2.13.0" in ci and '-e ".[offline,test]"' in ci
        return "install: .ci/run runs it on every CI; then " + _handle(parts[-1], cwd, grid)
    head = " ".join(words[:2])
    if words == ["python", "-m", "pytest"]:
        return "not here: " + NOT_HERE["python -m pytest"]
    if words[:3] == ["python", "-m", "pytest"]:  # a selection of the suite: it collects
        out = _run([sys.executable, *words[1:], "--collect-only", "-q"], REPO)
        assert re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", out.stdout)
        return "collected"
    if head == "fpt fetch-weights":
        return "not here: " + NOT_HERE[head]
    if words[0] in ("squeue", "scancel"):  # the SLURM recipe
        return "not here: " + NOT_HERE[words[0]]
    if head == "fpt bench":
        _run([*FPT, *words[1:], "--warmup", "1", "--iters", "1", "--eval-examples", "4"], cwd)
        return "ran shortened: " + NOT_HERE[head]
    if head == "fpt plan":  # the grid's cost: a row per experiment of the config, and the total
        out = _run([*FPT, *words[1:]], cwd)
        import yaml

        config = "config.yaml"
        if "--configfile" in words:
            config = words[words.index("--configfile") + 1]
        for name in [*yaml.safe_load((cwd / config).read_text())["experiments"], "grid (unique"]:
            assert f"\n{name} " in out.stdout, (name, out.stdout)
        return "ran: every experiment's cost and the total"
    if words[0] == "fpt":  # cheap: run as written (an --out under /tmp goes to tmp instead)
        args = [
            w if not w.startswith("/tmp/") else str(cwd / "tmp" / Path(w).name) for w in words[1:]
        ]
        _run([*FPT, *args], cwd)
        return "ran"
    if words[0] == "snakemake":
        if "--report" in words:  # needs finished results: the test grid's, for real
            work, grid_cmd = grid
            report = work / "report.html"
            _run([*grid_cmd, "--report", str(report)], work)
            assert report.stat().st_size > 100_000
            return "ran on the test grid"
        dry = words[1:] if "-n" in words else ["-n", *words[1:]]
        _run([*SNAKEMAKE, *dry], cwd)
        return "dry run"
    raise AssertionError(f"README command not covered by tests/test_readme.py: {words!r}")


def test_every_readme_command_runs(workflow_copy, local_test_grid):
    """In the session's copy of the checkout, as a user's clone: its own results/."""
    commands = readme_commands()
    assert len(commands) >= 15  # every block, not a parse that found nothing
    done = {shlex.join(c): _handle(c, workflow_copy, local_test_grid) for c in commands}
    assert all(done.values()), done


def test_the_readmes_python_snippets_run(local_test_grid, tmp_path):
    """The pandas snippet reads results/metrics.parquet: run it where one exists."""
    grid_work, _ = local_test_grid
    (tmp_path / "results").mkdir()
    (tmp_path / "results/metrics.parquet").symlink_to(grid_work / "results/test/metrics.parquet")
    snippets = [body for lang, body in readme_blocks() if lang == "python"]
    assert snippets
    for code in snippets:
        out = _run([sys.executable, "-c", code], tmp_path)
        assert "accuracy" in out.stdout or "mean" in out.stdout


def test_unknown_commands_fail_the_test(tmp_path):
    with pytest.raises(AssertionError, match="not covered"):
        _handle(["rm", "-rf", "results"], tmp_path, (tmp_path, []))
