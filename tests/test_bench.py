import json
import subprocess
import sys

import pytest
import torch

from fpt.bench import ABLATIONS, step_flops
from fpt.bench.step import eval_rate, forward_flops, our_loop, reference_step
from fpt.models import build_model
from fpt.spec import RunSpec
from fpt.tasks import make_task
from fpt.train import Loop


def test_full_training_flops_match_nanogpt_formula():
    task = make_task("bit_xor")
    model = build_model(task, "gpt2", "tiny", "random", "full")
    T, d, L, B = 10, 64, 2, 3
    n_blk = L * (d * 3 * d + d * d + d * 4 * d + 4 * d * d)  # c_attn, c_proj, c_fc, mlp c_proj
    # 6N + 12LTd per token, plus the input (1 -> d) and head (d -> 2 on 5 answer tokens) layers
    expected = B * (T * (6 * n_blk + 12 * L * T * d + 2 * 1 * d * 2) + 5 * 3 * 2 * d * 2)
    assert step_flops(model, task, B) == pytest.approx(expected)


def test_flops_are_the_models_own_count():
    """The bench's step FLOPs are B x the model's (forward, dX, dW) per example; evaluation
    costs the forward term; the count from the model's own shapes equals the task's."""
    task = make_task("bit_xor")
    model = build_model(task, "gpt2", "tiny", "random", "fpt")
    fwd, dx, dw = model.flops_per_example(task)
    assert model.flops_per_example() == (fwd, dx, dw)
    assert step_flops(model, task, 3) == 3 * (fwd + dx + dw)
    assert forward_flops(model, task, 3) == 3 * fwd and 0 < dw < dx


def test_the_model_configures_adam_over_its_trainable_weights_only():
    task = make_task("bit_xor")
    model = build_model(task, "gpt2", "tiny", "random", "fpt")
    opt = model.configure_optimizers(1e-3, "cpu")
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["lr"] == 1e-3
    (group,) = opt.param_groups
    assert group["params"] == [p for p in model.parameters() if p.requires_grad]
    assert not opt.defaults["fused"]  # fused Adam on CUDA only


def test_our_loop_is_the_training_loop():
    """`fpt bench` steps fpt.train.Loop itself (built by build_run); each ablation undoes
    one thing and keeps the rest."""
    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        batch_size=4,
        micro_batch_size=2,
        options={"val_size": 8, "test_size": 8},
    )
    dev = torch.device("cpu")
    loop, step = our_loop(spec, dev, n_steps=2)
    assert isinstance(loop, Loop)
    step()
    assert loop.step == 1 and loop.acc.n == 4 * loop.task.head.n_outputs
    ev = eval_rate(loop, 4)
    assert ev["examples"] == 4 and ev["examples_per_s"] > 0
    for undo in ABLATIONS:
        loop, step = our_loop(spec, dev, n_steps=2, undo=undo)
        step()
        assert loop.step == 1, undo
    reference_step(spec, dev, n_steps=2)()


def test_bench_package_api_and_no_cli_cycle():
    import fpt.bench
    import fpt.bench.cli

    assert fpt.bench.fake_data_dir.__module__ == "fpt.bench.fake_data"
    assert fpt.bench.bench.__module__ == "fpt.bench.step"
    assert "fpt.cli" not in fpt.bench.cli.__dict__ and "_option" not in fpt.bench.cli.__dict__
    with pytest.raises(AttributeError):
        fpt.bench.no_such_name  # noqa: B018


def test_report_module_runs(tmp_path):
    (tmp_path / "machine.txt").write_text("nproc: 2\n")
    out = subprocess.run(
        [sys.executable, "-m", "fpt.bench.report", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("# Benchmark summary")


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
