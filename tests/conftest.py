import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# No model hub in tests: from_pretrained must find local folders or fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

# Process-wide state that fpt.train changes (threads=, handle_signals=, seed_everything on
# CPU, compile=) or that a test may change; restored around every test and every module.
GUARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


@contextlib.contextmanager
def global_state_restored():
    """Put back torch's thread count, the SIGTERM/SIGUSR1/SIGINT handlers, the
    deterministic-algorithms flags, the cwd and the environment as they were."""
    threads = torch.get_num_threads()
    handlers = {s: signal.getsignal(s) for s in GUARDED_SIGNALS}
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cwd, env = os.getcwd(), dict(os.environ)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        for sig, handler in handlers.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        now = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        if now != deterministic:
            # the private setter, as fpt.train uses: the public one imports torch._inductor (4 s)
            torch._C._set_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        if os.getcwd() != cwd:
            os.chdir(cwd)
        env["PYTEST_CURRENT_TEST"] = os.environ.get("PYTEST_CURRENT_TEST")  # pytest's own
        env = {k: v for k, v in env.items() if v is not None}
        if dict(os.environ) != env:
            os.environ.clear()
            os.environ.update(env)


@pytest.fixture(autouse=True)
def _restore_global_state():
    with global_state_restored():
        yield


@pytest.fixture(autouse=True, scope="module")
def _restore_global_state_per_module():
    """Also around each module: module-scoped fixtures run before a test's own guard."""
    with global_state_restored():
        yield


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory) -> Path:
    """A weights dir holding a tiny GPT-2 saved with save_pretrained (the real on-disk
    format), so init=pretrained exercises GPT2Model.from_pretrained offline."""
    from transformers import GPT2Config, GPT2Model

    from fpt.models.families import CONFIG_DIR

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(1234)
    GPT2Model(GPT2Config.from_json_file(CONFIG_DIR / "gpt2-tiny.json")).save_pretrained(
        d / "gpt2-tiny"
    )
    return d


SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]
# What the workflow reads of the checkout (the Snakefile imports fpt from its parent folder).
WORKFLOW_FILES = ("fpt", "workflow", ".test", "config.yaml", "demo.yaml", "pyproject.toml")


@pytest.fixture(scope="session")
def workflow_copy(tmp_path_factory) -> Path:
    """A copy of the checkout's workflow and package, so that tests which edit a module to
    exercise rerun triggers edit the copy, never a tracked file."""
    import shutil

    root = tmp_path_factory.mktemp("checkout")
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / name)
    return root


@pytest.fixture(scope="session")
def local_test_grid(tmp_path_factory, tiny_weights_dir, workflow_copy):
    """The .test grid run end to end by the local executor, from `workflow_copy`:
    (work dir, command)."""
    work = tmp_path_factory.mktemp("wf")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(workflow_copy / "workflow" / "Snakefile"),
        "--cores",
        "2",
        "--directory",
        str(work),
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        "--config",
        f"weights_dir={tiny_weights_dir}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return work, cmd
