"""Output-only feature caching (fpt.features): a cached run gives the metrics of the same
run trained uncached (up to float rounding), resumes, and is refused where it cannot apply.
Also the speed options' plumbing (compile) and the pipeline benchmark's correctness; no test
here asserts a speed."""

import json
import logging
import os
import signal
import subprocess
import sys
from contextlib import nullcontext

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fpt import features
from fpt.metrics import read_run
from fpt.models import build_model
from fpt.spec import RunSpec
from fpt.tasks import make_task
from fpt.train import train

SPEC = RunSpec(
    task="digits",
    backbone="gpt2",
    size="tiny",
    init="random",
    trainable="output_only",
    steps=40,
    batch_size=8,
    micro_batch_size=4,
    eval_every=20,
    eval_batch_size=64,
    ckpt_every=20,
    lr=3e-3,
    options={"cache_features": True},
)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(tmp_path, name, spec=SPEC, **kw) -> pd.DataFrame:
    out = train(spec, tmp_path / name, device="cpu", progress=False, handle_signals=False, **kw)
    return read_run(out).sort_values(["step", "split"]).reset_index(drop=True)


def test_cached_equals_uncached(tmp_path, monkeypatch):
    cached = _run(tmp_path, "cached")
    monkeypatch.setenv(features.ENV, "off")
    uncached = _run(tmp_path, "uncached")
    assert cached["accuracy"].max() > 0.2  # it learns something (10 classes)
    for col in ("step", "samples", "split", "diverged"):
        assert (cached[col] == uncached[col]).all()
    assert cached["loss"].to_numpy() == pytest.approx(uncached["loss"].to_numpy(), rel=1e-4)
    assert cached["accuracy"].to_numpy() == pytest.approx(
        uncached["accuracy"].to_numpy(), abs=1 / 300 + 1e-9
    )  # at most one example of 300 flips on a rounding tie


def test_cached_run_resumes_to_the_same_metrics(tmp_path, monkeypatch, caplog):
    """Preempted at step 30 (exit 75), the rerun resumes from the step-30 checkpoint (it says
    so and trains only the 10 steps left) and ends with the uninterrupted run's metrics.
    Training is deterministic on CPU, so equal metrics alone would not tell a resume from a
    silent restart: the log line and the step count do."""
    whole = _run(tmp_path, "whole")
    import fpt.train as ft
    from fpt import checkpoint

    calls, step = [0], ft.train_step

    def preempt_at_30(*a, **k):  # a SIGTERM after 30 steps: checkpoint, exit 75
        step(*a, **k)
        calls[0] += 1
        if calls[0] == 30:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(ft, "train_step", preempt_at_30)
    with pytest.raises(SystemExit) as excinfo:  # the conftest guard restores the handler
        train(SPEC, tmp_path / "resumed", device="cpu", progress=False)
    assert excinfo.value.code == ft.EXIT_PREEMPTED
    state = checkpoint.load_latest(tmp_path / "resumed" / "checkpoint", SPEC.to_json())
    assert state is not None and state["step"] == 30

    def counted(*a, **k):
        calls[0] += 1
        return step(*a, **k)

    calls[0] = 0
    monkeypatch.setattr(ft, "train_step", counted)
    with caplog.at_level(logging.INFO, logger="fpt.train"):
        resumed = _run(tmp_path, "resumed")
    assert f"resuming {SPEC.path} from step 30" in caplog.messages
    assert calls[0] == SPEC.steps - 30  # only the steps left, not a restart
    assert (whole["loss"].to_numpy() == resumed["loss"].to_numpy()).all()
    assert (whole["accuracy"].to_numpy() == resumed["accuracy"].to_numpy()).all()


def test_the_cache_holds_one_feature_row_per_example():
    task = make_task("digits")
    torch.manual_seed(0)
    model = build_model(task, "gpt2", "tiny", "random", "output_only")
    cached = features.CachedFeatures(task, model, 128, nullcontext)
    model.eval()
    val = task.splits["val"]
    with torch.inference_mode():
        direct = model.features(task.to_batch(val.take(torch.arange(5)), None).x)
    assert cached.feats["val"][0].shape == (len(val), 1, model.backbone.width)
    assert torch.allclose(cached.feats["val"][0][:5], direct, atol=1e-5)


@pytest.mark.parametrize(
    "task,trainable,options,match",
    [
        ("digits", "fpt", {}, "below the output layer"),
        ("bit_xor", "output_only", {}, "fresh examples"),
    ],
)
def test_caching_is_refused_where_it_cannot_apply(task, trainable, options, match):
    t = make_task(task, options=options)
    model = build_model(t, "gpt2", "tiny", "random", trainable)
    with pytest.raises(ValueError, match=match):
        features.prepare({"cache_features": True}, t, model, 16, None)


def test_without_the_option_nothing_changes():
    t = make_task("digits")
    model = build_model(t, "gpt2", "tiny", "random", "output_only")
    assert features.prepare({}, t, model, 16, None) == (t, model)


def test_frozen_weights_get_no_gradients_and_no_optimizer_state(tmp_path):
    from fpt.train import Accumulator, train_step

    task = make_task("digits")
    model = build_model(task, "gpt2", "tiny", "random", "fpt")
    opt = model.configure_optimizers(1e-3, "cpu")
    params = [p for g in opt.param_groups for p in g["params"]]
    assert params == [p for p in model.parameters() if p.requires_grad]
    acc = Accumulator("cpu")
    batch = task.train_batch(4, torch.Generator().manual_seed(0))
    train_step(model, task, batch, opt, params, 4, nullcontext, acc)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(dict(model.named_parameters())[n].grad is None for n in frozen)

    spec = RunSpec.from_json(
        {**SPEC.to_json(), "trainable": "fpt", "steps": 2, "options": {}, "ckpt_every": 2}
    )
    _run(tmp_path, "fpt", spec=spec)
    state = torch.load(tmp_path / "fpt" / "checkpoint" / "ckpt.pt", weights_only=False)
    task = make_task("digits")
    model = build_model(task, "gpt2", "tiny", "random", "fpt")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(state["model"]) == sorted(trainable)
    assert len(state["optimizer"]["state"]) == len(trainable)  # Adam state only for those


def test_compile_option_is_accepted(tmp_path, monkeypatch):
    """compile=True compiles the model the loop steps and evaluates: torch.compile is called
    on it, and dynamo traces graphs that then run. On CPU train() turns deterministic
    algorithms on (torch's and inductor's flags); both are put back afterwards."""
    dynamo = pytest.importorskip("torch._dynamo")
    import torch._inductor.config as inductor_config

    spec = RunSpec.from_json({**SPEC.to_json(), "steps": 2, "eval_every": 2, "options": {}})
    # A recording backend instead of inductor: it checks the plumbing without a C++ build
    # (minutes on a small CPU) and returns each traced graph to run eagerly.
    compiled, graphs, orig = [], [], torch.compile

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def recording_compile(model, **kw):
        compiled.append(model)
        return orig(model, backend=backend)

    monkeypatch.setattr(torch, "compile", recording_compile)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        inductor_config.deterministic,
    )
    dynamo.reset()
    try:
        df = _run(tmp_path, "compiled", spec=spec, compile=True)
        assert torch.are_deterministic_algorithms_enabled() and inductor_config.deterministic
    finally:
        dynamo.reset()  # drop the graphs and guards traced here
        inductor_config.deterministic = before[2]
        torch._C._set_deterministic_algorithms(before[0], warn_only=before[1])
    assert set(df["split"]) == {"train", "val", "test"}
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)
    assert graphs, "torch.compile was called but dynamo traced nothing: the model ran eagerly"


def test_bench_collect_is_correct(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fpt", "bench-collect", "--files", "30", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout)
    assert r["correct"] and r["files"] == 30 and r["rows"] == 30 * 32


def test_bench_cache_reports_both_ways(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "fpt",
            "bench-cache",
            "--size",
            "tiny",
            "--cache-examples",
            "16",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    r = json.loads(out.stdout)
    assert r["cached_step_s"] > 0 and r["uncached_step_s"] > 0 and r["speedup_per_epoch"] > 0
    assert r["split_sizes"] == {"train": 1197, "val": 300, "test": 300}


def test_fast_collect_keeps_the_schema_check(tmp_path):
    from fpt.analysis.collect import collect
    from fpt.bench.pipeline import make_run_files
    from fpt.metrics import MetricsSchemaError

    good = make_run_files(tmp_path / "a", 2)
    t = pq.read_table(good[0])
    bad = tmp_path / "bad.parquet"
    i = t.schema.get_field_index("schema_version")
    pq.write_table(t.set_column(i, "schema_version", pa.array([99] * t.num_rows)), bad)
    with pytest.raises(MetricsSchemaError, match="bad.parquet"):
        collect([*good, bad], tmp_path / "all.parquet")
    assert collect(good, tmp_path / "all.parquet") == 2 * t.num_rows
