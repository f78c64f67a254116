"""benchmarks/gpu_check.sh --cpu: every step of the GPU check with its CUDA parts replaced by
their CPU equivalents (device cpu, fp32/bf16, tf32 refused, fake GPU ids for the leases), so
that CI catches rot in the script and in the paths it drives before a GPU ever runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = "env precision train compile resume xdevice pack bench lease smk".split()
# each step's JSON of figures (steps env..smk; bench writes several)
JSONS = [
    "env.json",
    "precision.json",
    "train.json",
    "compile.json",
    "resume.json",
    "xdevice.json",
    "pack.json",
    "bench_bit_memory_fp32.json",
    "bench_cifar10_bf16.json",
    "bench_memory.json",
    "bench_fused_bit_xor_shared.json",
    "lease.json",
    "smk_plan_compare.json",
    "steps.json",
]


@pytest.mark.slow  # 132 s on 2 idle cores (every step trains, the smk step runs Snakemake)
def test_gpu_check_cpu_runs_every_step_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("STEPS", None)
    # a generous budget: this checks what the steps do, not how fast a shared machine is
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--cpu", "--out", str(out), "--budget", "900"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = (out / "summary.txt").read_text() if (out / "summary.txt").exists() else ""
    assert proc.returncode == 0, (
        f"gpu_check.sh --cpu exited {proc.returncode}:\n{summary}\n{proc.stderr[-3000:]}"
    )
    for step in STEPS:
        assert re.search(rf"^\[{step}\] rc=0 \d+s$", summary, re.M), (
            f"no passing [{step}] line:\n{summary}"
        )
    assert re.search(r"^RESULT: all 10 steps passed in \d+ s \(cpu;", summary, re.M), summary
    for name in JSONS:
        assert (out / name).is_file(), (
            f"{name} missing from {sorted(p.name for p in out.iterdir())}"
        )
    steps = json.loads((out / "steps.json").read_text())
    assert [
        s["step"] for s in sorted(steps["steps"], key=lambda s: STEPS.index(s["step"]))
    ] == STEPS
    assert all(s["rc"] == 0 for s in steps["steps"])
    # a few figures that must have been measured, not written in
    precision = json.loads((out / "precision.json").read_text())
    assert (
        set(precision["modes"]) == {"fp32", "bf16", "tf32"}
        and precision["modes"]["tf32"]["refused"]
    )
    assert all(precision["modes"][p]["matmul_peak_tflops"] > 0 for p in ("fp32", "bf16"))
    resume = json.loads((out / "resume.json").read_text())
    assert resume["ok"] and resume["rule"] == "exact" and resume["max_abs_loss_diff"] == 0


def test_gpu_check_refuses_unknown_steps_and_arguments(tmp_path: Path) -> None:
    for args in (["--steps", "precision nosuchstep"], ["--frobnicate"]):
        proc = subprocess.run(
            ["bash", str(SCRIPT), "--cpu", "--out", str(tmp_path), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        assert "gpu_check.sh:" in proc.stderr


def test_gpu_check_script_parses_and_passes_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=60)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout
