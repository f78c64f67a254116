import json
import subprocess
import sys

import pytest

from fpt.bench import ABLATIONS, step_flops
from fpt.models import build_model
from fpt.tasks import make_task


def test_full_training_flops_match_nanogpt_formula():
    task = make_task("bit_xor")
    model = build_model(task, "gpt2", "tiny", "random", "full")
    T, d, L, B = 10, 64, 2, 3
    n_blk = L * (d * 3 * d + d * d + d * 4 * d + 4 * d * d)  # c_attn, c_proj, c_fc, mlp c_proj
    # 6N + 12LTd per token, plus the input (1 -> d) and head (d -> 2 on 5 answer tokens) layers
    expected = B * (T * (6 * n_blk + 12 * L * T * d + 2 * 1 * d * 2) + 5 * 3 * 2 * d * 2)
    assert step_flops(model, task, B) == pytest.approx(expected)


def test_output_only_skips_the_backward_through_the_backbone():
    task = make_task("bit_xor")
    full = step_flops(build_model(task, "gpt2", "tiny", "random", "full"), task, 1)
    out = step_flops(build_model(task, "gpt2", "tiny", "random", "output_only"), task, 1)
    fpt = step_flops(build_model(task, "gpt2", "tiny", "random", "fpt"), task, 1)
    assert out < fpt < full


@pytest.mark.slow  # end to end, minutes on 2 cores: not in the fast lane
def test_bench_cli_reports_both_loops():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpt",
            "bench",
            "--task",
            "bit_xor",
            "--backbone",
            "gpt2",
            "--size",
            "tiny",
            "--init",
            "random",
            "--iters",
            "2",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
            "--eval-examples",
            "4",
            "--ablations",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout)
    assert r["ours"]["steps_per_s"] > 0 and r["reference"]["steps_per_s"] > 0
    assert 0 < r["ours"]["fraction_of_peak"] < 1 and r["speedup_vs_reference"] > 0
    for k in ("samples_per_s", "tokens_per_s", "flops"):
        assert r["ours"][k] > 0
    assert r["ours"]["eval"]["examples"] == 4 and r["ours"]["eval"]["examples_per_s"] > 0
    # a number taken on a busy machine says so
    assert len(r["machine"]["loadavg_before"]) == 3 and r["machine"]["torch_threads"] == 1
    assert set(r["ablations"]) == set(ABLATIONS)
    assert r["params"]["frozen_with_grad"] == 0
    # The figures are one measurement seen several ways: each follows from the step time,
    # the batch (4), the task's 10 tokens, the analytic FLOP count and the measured peak.
    o, approx = r["ours"], pytest.approx
    task = make_task("bit_xor")
    flops = step_flops(build_model(task, "gpt2", "tiny", "random", "fpt"), task, 4)
    assert r["flop_per_step"] == approx(flops) and r["run"]["batch_size"] == 4
    assert o["steps_per_s"] == approx(1 / o["step_s"])
    assert o["samples_per_s"] == approx(4 * o["steps_per_s"])
    assert o["tokens_per_s"] == approx(10 * o["samples_per_s"])
    assert o["flops"] == approx(flops * o["steps_per_s"])
    assert o["fraction_of_peak"] == approx(o["flops"] / r["matmul_peak_flops"])
    assert r["speedup_vs_reference"] == approx(r["reference"]["step_s"] / o["step_s"])
    for a in r["ablations"].values():
        assert a["ours_speedup"] == approx(a["step_s"] / o["step_s"])
    assert r["dtype"] == "fp32"  # the run's precision (fpt.precision), not the device's
