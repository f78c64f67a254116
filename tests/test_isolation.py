"""Each test stands alone: the conftest guard puts back the process-wide state that training
changes (torch threads, the SIGTERM/SIGUSR1/SIGINT handlers, the deterministic-algorithms
flags) and the cwd and environment, after every test and after every module."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.conftest import REPO, global_state_restored

STATE = """
import os, signal, torch

def state():
    return {
        "threads": torch.get_num_threads(),
        "handlers": {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)},
        "deterministic": (torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled()),
        "cwd": os.getcwd(),
        "env": {k: os.environ.get(k) for k in ("FPT_PROBE_TEST", "FPT_PROBE_MODULE")},
    }
"""

# Changes everything the guard covers: in a test, and in a module-scoped fixture (set up
# before any function-scoped fixture, so only a guard around the module undoes it).
LEAKS = """
import pytest
from probe_state import *

@pytest.fixture(scope="module")
def leaky_module_fixture():
    torch.set_num_threads(torch.get_num_threads() + 2)
    os.environ["FPT_PROBE_MODULE"] = "leaked"

def test_changes_global_state(tmp_path, leaky_module_fixture):
    torch.set_num_threads(torch.get_num_threads() + 1)
    for s in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, lambda *a: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch._C._set_deterministic_algorithms(
        not torch.are_deterministic_algorithms_enabled(), warn_only=True
    )
    os.chdir(tmp_path)
    os.environ["FPT_PROBE_TEST"] = "leaked"
"""

CHECKS = """
from probe_state import *

BEFORE = state()  # at collection, before any test has run

def test_sees_the_state_the_session_began_with():
    now = state()
    changed = sorted(k for k in BEFORE if now[k] != BEFORE[k])
    assert not changed, f"changed: {changed}"
"""


def _pytest(tmp_path, order, guard=True):
    """Run the two probe modules in `order` in one pytest process; its exit code and output."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    cmd += ["-p", "tests.conftest"] if guard else []
    cmd += ["--rootdir", str(tmp_path), *(str(tmp_path / f"test_{name}.py") for name in order)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)


@pytest.mark.slow  # end to end, minutes on 2 cores: not in the fast lane
def test_a_test_that_changes_global_state_does_not_change_the_next_one(tmp_path):
    for name, text in {"probe_state": STATE, "test_leaks": LEAKS, "test_checks": CHECKS}.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
    for order in (("leaks", "checks"), ("checks", "leaks")):
        out = _pytest(tmp_path, order)
        assert out.returncode == 0, (order, out.stdout[-3000:] + out.stderr[-3000:])
        assert "2 passed" in out.stdout, out.stdout[-3000:]
    # Without the guard the same run fails, so the probe does see a leak.
    out = _pytest(tmp_path, ("leaks", "checks"), guard=False)
    assert out.returncode == 1 and "1 failed, 1 passed" in out.stdout, out.stdout[-3000:]
    assert "changed: ['cwd', 'deterministic', 'env', 'handlers', 'threads']" in out.stdout


def test_the_guard_restores_what_training_changes(tmp_path):
    """In process: what train(threads=1, handle_signals=True) and a compile=True run on CPU
    leave behind is undone by the guard's context manager."""
    from fpt.train import Preempted

    before = (
        torch.get_num_threads(),
        {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)},
        torch.are_deterministic_algorithms_enabled(),
        os.getcwd(),
    )
    with global_state_restored():
        torch.set_num_threads(1 if before[0] != 1 else 2)
        Preempted().install()  # what handle_signals=True does
        torch._C._set_deterministic_algorithms(not before[2])
        os.chdir(tmp_path)
        os.environ["FPT_PROBE_TEST"] = "leaked"
    after = (
        torch.get_num_threads(),
        {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)},
        torch.are_deterministic_algorithms_enabled(),
        os.getcwd(),
    )
    assert after == before and "FPT_PROBE_TEST" not in os.environ
