"""Docs that cannot rot: every command in the bash blocks of README.md and docs/**/*.md is run
here, on a fresh copy of the checkout (`workflow_copy`), for real where that is cheap, as a dry
run (`-n`) where it trains or downloads. A command the test does not know fails the test, so a
new command in the docs needs a line here; the few that cannot run on this machine are listed
with the reason. Every relative link of those pages points to a file, and every #anchor to a
heading."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# The pages whose commands and links are checked: the front page and every docs page.
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

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
    "fpt fetch-data": "a dataset of the paper downloads: no network here; its target "
    "fetch_<dataset> is dry-run instead (a task's own offline dataset is fetched for real)",
    "squeue": "needs a SLURM cluster: tests/test_slurm.py::test_a_resubmitted_job_of_a_run_"
    "still_training_fails_fast_naming_it follows the recipe on the CI's (squeue --me --name)",
    "scancel": "needs a SLURM cluster and a dead Snakemake's jobs: tests/test_slurm.py::test_a_"
    "resubmitted_job_of_a_run_still_training_fails_fast_naming_it cancels them by name",
}


def page_blocks(pages=PAGES) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block of the pages."""
    return [b for p in pages for b in re.findall(r"```(\w*)\n(.*?)```", p.read_text(), re.S)]


def page_commands(pages=PAGES) -> list[list[str]]:
    """Shell commands of the pages' bash blocks as words: continuations joined, comments
    dropped."""
    out = []
    for lang, body in page_blocks(pages):
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(words)
    return out


def _run(
    cmd: list[str], cwd: Path, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `cmd`; `env`: the command's own VAR=value prefixes (a PYTHONPATH goes before the
    checkout's)."""
    env = dict(env or {})
    path = os.pathsep.join(filter(None, [env.pop("PYTHONPATH", None), str(REPO)]))
    env = {**os.environ, **env, "PYTHONPATH": path}
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert out.returncode == 0, f"{shlex.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


PAPER_DATASETS = ("mnist", "cifar10", "listops", "homology")  # downloaded, never offline


def _handle(words: list[str], cwd: Path, grid: tuple[Path, list[str]]) -> str:
    """Run one docs command the way this test runs it; return how (for the failure text)."""
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # VAR=value cmd ...
        name, value = words[0].split("=", 1)
        env[name] = value
        words = words[1:]
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
        cmd = [*FPT, *words[1:], "--warmup", "1", "--iters", "1", "--eval-examples", "4"]
        _run(cmd, cwd, env=env)
        return "ran shortened: " + NOT_HERE[head]
    if head == "fpt fetch-data" and len(words) > 2 and words[2] in PAPER_DATASETS:
        _run([*SNAKEMAKE, "-n", "--cores", "1", f"fetch_{words[2]}"], cwd, env=env)
        return "dry run of its target: " + NOT_HERE[head]
    if head == "fpt plan":  # the grid's cost: a row per experiment of the config, and the total
        out = _run([*FPT, *words[1:]], cwd, env=env)
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
        _run([*FPT, *args], cwd, env=env)
        return "ran"
    if words[0] == "snakemake":
        if "--report" in words:  # needs finished results: the test grid's, for real
            work, grid_cmd = grid
            report = work / "report.html"
            _run([*grid_cmd, "--report", str(report)], work)
            assert report.stat().st_size > 100_000
            return "ran on the test grid"
        dry = words[1:] if "-n" in words else ["-n", *words[1:]]
        _run([*SNAKEMAKE, *dry], cwd, env=env)
        return "dry run"
    raise AssertionError(f"docs command not covered by tests/test_readme.py: {words!r}")


@pytest.mark.slow  # Snakemake and training subprocesses: minutes on 2 cores
def test_every_docs_command_runs(workflow_copy, local_test_grid):
    """In the session's copy of the checkout, as a user's clone: its own results/, and the
    docs' example files (docs/examples/) where the docs say they are."""
    shutil.copytree(REPO / "docs/examples", workflow_copy / "docs/examples", dirs_exist_ok=True)
    commands = page_commands()
    assert len(commands) >= 25  # every block of every page, not a parse that found nothing
    unique = {shlex.join(c): c for c in commands}  # a command two pages show runs once
    done = {line: _handle(c, workflow_copy, local_test_grid) for line, c in unique.items()}
    assert all(done.values()), done


@pytest.mark.slow  # needs the test grid's results
def test_the_docs_python_snippets_run(local_test_grid, tmp_path):
    """The pandas snippets read results/metrics.parquet: run them where one exists."""
    grid_work, _ = local_test_grid
    (tmp_path / "results").mkdir()
    (tmp_path / "results/metrics.parquet").symlink_to(grid_work / "results/test/metrics.parquet")
    snippets = [body for lang, body in page_blocks() if lang == "python"]
    assert snippets
    for code in snippets:
        out = _run([sys.executable, "-c", code], tmp_path)
        assert "accuracy" in out.stdout or "mean" in out.stdout


def test_unknown_commands_fail_the_test(tmp_path):
    with pytest.raises(AssertionError, match="not covered"):
        _handle(["rm", "-rf", "results"], tmp_path, (tmp_path, []))
    with pytest.raises(AssertionError, match="not covered"):  # an env prefix hides nothing
        _handle(["FOO=1", "rm", "-rf", "results"], tmp_path, (tmp_path, []))


def test_the_docs_pages_are_found():
    names = {p.relative_to(REPO).as_posix() for p in PAGES}
    assert {"README.md", "docs/operations.md", "docs/extending.md"} <= names
    assert page_commands([REPO / "README.md"])  # the front page's own commands


# ---- links ---------------------------------------------------------------------------------


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings: lower case, punctuation dropped,
    spaces as hyphens, a repeated heading numbered -1, -2, ..."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#* *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(page: Path) -> list[str]:
    """The targets of the page's Markdown links, outside code blocks and code spans."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def broken_links(page: Path) -> list[str]:
    bad = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    return bad


def test_every_relative_link_resolves():
    bad = {p.relative_to(REPO).as_posix(): broken_links(p) for p in PAGES}
    assert not {p: b for p, b in bad.items() if b}, bad
    assert sum(len(links(p)) for p in PAGES) >= 50  # the links were found


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A `code` heading: with (punctuation)\n")
    page.write_text(
        "# Page\n[ok](other.md) [ok](other.md#a-code-heading-with-punctuation) [ok](#page)\n"
        "[gone](missing.md) [no heading](other.md#nope) [no anchor](#nope)\n"
        "`[in code](missing2.md)`\n"
    )
    assert len(broken_links(page)) == 3, broken_links(page)
