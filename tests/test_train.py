"""Training: metrics contract, determinism, resume after kill -9 / SIGTERM / SIGUSR1,
divergence, gradient accumulation."""

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from fpt import checkpoint
from fpt.metrics import COLUMNS, read_run
from fpt.spec import RunSpec
from fpt.train import EXIT_PREEMPTED, train

SPEC = RunSpec(
    task="bit_memory",
    backbone="gpt2",
    size="tiny",
    init="random",
    steps=240,
    batch_size=8,
    micro_batch_size=4,
    eval_every=20,
    ckpt_every=10,
    options={"val_size": 32, "test_size": 64},
)
COMPARE = ["step", "samples", "split", "loss", "accuracy", "diverged"]


# `python -m fpt` with fpt.train.train_step wrapped to count its calls, printed at exit
# (atexit runs on the exit-75 path too): how a subprocess shows how many steps it trained.
COUNTING_FPT = [
    "-c",
    "import atexit, sys\n"
    "import fpt.train as t\n"
    "from fpt.cli import main\n"
    "calls, step = [0], t.train_step\n"
    "def counted(*a, **k):\n"
    "    calls[0] += 1\n"
    "    return step(*a, **k)\n"
    "t.train_step = counted\n"
    "atexit.register(lambda: print(f'train_step calls: {calls[0]}', file=sys.stderr))\n"
    "sys.exit(main(sys.argv[1:]))\n",
]


def _cli(spec: RunSpec, out, *extra: str, count_steps: bool = False) -> list[str]:
    """`fpt train` of `spec` into `out` on one CPU thread, as a command line."""
    return [
        sys.executable,
        *(COUNTING_FPT if count_steps else ["-m", "fpt"]),
        "train",
        *spec.cli_args(),
        *("--out", str(out), "--device", "cpu", "--threads", "1"),
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    subprocess.run(_cli(SPEC, out), check=True, capture_output=True)
    return read_run(out / "metrics.parquet")


def test_metrics_follow_the_contract(reference):
    df = reference
    assert list(df.columns) == COLUMNS
    assert set(df["split"]) == {"train", "val", "test"}
    assert sorted(df["step"].unique()) == list(range(0, 241, 20))
    assert (df["samples"] == df["step"] * 8).all()
    assert (
        (df["task"] == "bit_memory").all()
        and (df["trainable"] == "fpt").all()
        and (df["lr"] == 1e-3).all()
    )
    assert df["git_rev"].iloc[0] and df["torch_version"].iloc[0] == torch.__version__
    assert not df["diverged"].any()
    assert df["trainable_params"].iloc[0] < df["total_params"].iloc[0]
    assert df[df["split"] == "train"]["step"].min() == 20  # no train row before any step


def _wait_for(path, proc, timeout=120):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.02)


def _checkpointed_step(out, spec: RunSpec = SPEC) -> int:
    """The step a rerun in `out` must resume from: what fpt.checkpoint hands train()."""
    state = checkpoint.load_latest(out / "checkpoint", spec.to_json())
    assert state is not None, "no intact checkpoint to resume from"
    assert 0 < state["step"] < spec.steps
    return state["step"]


def _rerun_resumes(out, step: int, spec: RunSpec = SPEC) -> pd.DataFrame:
    """Rerun the CLI in `out` and check it resumed from `step`: it logs so, trains only the
    steps left (a silent restart would train them all and, on CPU, still end with the same
    metrics) and evaluates only after `step`. Returns its metrics."""
    done = subprocess.run(_cli(spec, out, count_steps=True), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {spec.path} from step {step}" in done.stderr, done.stderr[-3000:]
    assert f"train_step calls: {spec.steps - step}\n" in done.stderr, done.stderr[-3000:]
    logged = [int(s) for s in re.findall(rf"step (\d+)/{spec.steps} ", done.stderr)]
    evals = range(spec.eval_every, spec.steps + 1, spec.eval_every)
    assert logged == [s for s in evals if s > step]
    return read_run(out / "metrics.parquet")


@pytest.mark.slow  # end to end, minutes on 2 cores: not in the fast lane
def test_kill_9_then_rerun_gives_the_uninterrupted_metrics(tmp_path, reference):
    proc = subprocess.Popen(
        _cli(SPEC, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "checkpoint" / "ckpt.pt", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it really was killed mid-run
    assert not (tmp_path / "metrics.parquet").exists()
    got = _rerun_resumes(tmp_path, _checkpointed_step(tmp_path))
    pd.testing.assert_frame_equal(got[COMPARE], reference[COMPARE], check_exact=True)


@pytest.mark.slow  # end to end, minutes on 2 cores: not in the fast lane
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_preemption_signal_checkpoints_exits_75_and_resumes(tmp_path, reference, sig):
    """README: `fpt train` exits 75 on SIGTERM or SIGUSR1 (SLURM's pre-timeout warning)
    after writing a checkpoint; the rerun resumes from it to the uninterrupted metrics."""
    proc = subprocess.Popen(
        _cli(SPEC, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(tmp_path / "checkpoint" / "ckpt.pt", proc)  # written after the handlers are set
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert f"received signal {int(sig)} at step " in err
    assert not (tmp_path / "metrics.parquet").exists()
    got = _rerun_resumes(tmp_path, _checkpointed_step(tmp_path))
    pd.testing.assert_frame_equal(got[COMPARE], reference[COMPARE], check_exact=True)


def test_a_checkpoint_for_other_settings_is_not_resumed(tmp_path):
    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        steps=20,
        batch_size=4,
        eval_every=10,
        ckpt_every=10,
        options={"val_size": 16, "test_size": 16},
    )
    train(spec, tmp_path, device="cpu", handle_signals=False)
    longer = RunSpec(**{**spec.to_json(), "steps": 30})
    train(longer, tmp_path, device="cpu", handle_signals=False)
    df = read_run(tmp_path / "metrics.parquet")
    assert sorted(df["step"].unique()) == [
        0,
        10,
        20,
        30,
    ]  # retrained from scratch, not from step 20
    assert json.loads((tmp_path / "spec.json").read_text())["steps"] == 30


def test_divergence_ends_the_run_as_a_result(tmp_path, monkeypatch):
    """Training inputs turn non-finite after 12 steps (a stand-in for an exploding run): the
    run ends at the next evaluation with diverged=true and keeps its earlier, finite rows."""
    from fpt.tasks.bits import BitXOR

    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        trainable="full",
        steps=200,
        batch_size=8,
        eval_every=5,
        ckpt_every=100,
        options={"val_size": 16, "test_size": 16},
    )
    orig, calls = BitXOR.train_batch, {"n": 0}

    def exploding(self, n, g):
        calls["n"] += 1
        b = orig(self, n, g)
        if calls["n"] > 12:
            b.x = b.x * float("inf")
        return b

    monkeypatch.setattr(BitXOR, "train_batch", exploding)
    df = read_run(train(spec, tmp_path, device="cpu", handle_signals=False))
    assert df["diverged"].all()
    assert df["step"].max() == 15  # stopped at the first evaluation after the blow-up
    finite = df[np.isfinite(df["loss"])]
    assert sorted(finite["step"].unique()) == [0, 5, 10]

    from fpt.analysis.stats import final_rows

    assert final_rows(df, "test")["step"].item() == 10  # tables report the value before divergence

    # Killed after the final checkpoint, before metrics.parquet: the rerun (inputs finite
    # again) trains no further; the diverged run ends as it stood.
    (tmp_path / "metrics.parquet").unlink()
    monkeypatch.setattr(BitXOR, "train_batch", orig)
    again = read_run(train(spec, tmp_path, device="cpu", handle_signals=False))
    pd.testing.assert_frame_equal(again[COMPARE], df[COMPARE], check_exact=True)


def test_a_checkpoint_the_loop_cannot_read_means_a_clean_start(tmp_path, caplog):
    """Checkpoints for the run's spec that an older fpt wrote (other state, other parameter
    names) are not resumed: the run starts over and ends as a fresh run does."""
    from fpt.train import Loop

    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        steps=10,
        batch_size=4,
        eval_every=5,
        ckpt_every=5,
        options={"val_size": 16, "test_size": 16},
    )
    fresh = read_run(train(spec, tmp_path / "fresh", device="cpu", handle_signals=False))
    good = checkpoint.load_latest(tmp_path / "fresh" / "checkpoint", spec.to_json())
    assert set(good) == {"spec", *Loop.STATE_KEYS}
    renamed = {**good, "model": {f"old.{k}": v for k, v in good["model"].items()}}
    for name, state, says in [
        ("layout", {"spec": spec.to_json(), "step": 5, "rows": []}, "lacks"),
        ("params", renamed, "other trainable parameters"),  # every key, other parameters
    ]:
        checkpoint.save(tmp_path / name / "checkpoint", state)
        caplog.clear()
        with caplog.at_level("WARNING", logger="fpt"):
            got = read_run(train(spec, tmp_path / name, device="cpu", handle_signals=False))
        assert says in caplog.text, name
        pd.testing.assert_frame_equal(got[COMPARE], fresh[COMPARE], check_exact=True)


def test_cpu_training_is_deterministic(tmp_path):
    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        steps=30,
        batch_size=8,
        eval_every=10,
        options={"val_size": 16, "test_size": 32},
    )
    a = read_run(train(spec, tmp_path / "a", device="cpu", handle_signals=False))
    b = read_run(train(spec, tmp_path / "b", device="cpu", handle_signals=False))
    pd.testing.assert_frame_equal(a[COMPARE], b[COMPARE])
    os.sync()


# ---- gradient accumulation --------------------------------------------------------------

ACCUM = RunSpec(
    task="bit_xor",
    backbone="gpt2",
    size="tiny",
    init="random",
    trainable="full",
    steps=10,
    eval_every=5,
    ckpt_every=100,
    backbone_dropout=0.0,  # GPT-2's dropouts off; the FPT input dropout is patched off below
    options={"val_size": 64, "test_size": 64},
)


@pytest.mark.parametrize("batch,micro", [(8, 4), (6, 4)], ids=["8-in-4+4", "6-in-4+2"])
def test_micro_batches_give_the_metrics_of_whole_batches(tmp_path, monkeypatch, batch, micro):
    """A batch trained in micro-batches (gradient accumulation) gives the run the whole batch
    gives. 6 in 4+2 has unequal micro-batches: a loss not weighted by len(mb)/len(batch)
    would weight the 2 like the 4 and change the direction of the step (8 in 4+4 alone
    would not catch that: Adam and the clipping undo a uniform scale)."""
    # Dropout masks are drawn per micro-batch: another difference than the one tested.
    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)
    runs = {}
    for m in (batch, micro):
        spec = RunSpec.from_json({**ACCUM.to_json(), "batch_size": batch, "micro_batch_size": m})
        out = train(spec, tmp_path / str(m), device="cpu", threads=1, handle_signals=False)
        runs[m] = read_run(out).sort_values(["step", "split"]).reset_index(drop=True)
    whole, split = runs[batch], runs[micro]
    assert len(whole) == 2 + 2 * 3  # step 0: val, test; steps 5 and 10: train, val, test
    for col in ("step", "samples", "split", "diverged"):
        assert (whole[col] == split[col]).all(), col
    # Not bitwise: a gradient summed over micro-batches adds the same float32 terms in another
    # order (rounding ~1e-7 relative per sum), and Adam carries that over the 10 steps; we
    # measured at most 2e-7 relative on the losses, so 1e-5 leaves a wide margin yet is far
    # below what a wrongly weighted step changes.
    assert split["loss"].to_numpy() == pytest.approx(whole["loss"].to_numpy(), rel=1e-5)
    # equal in practice; one label may flip on a rounding tie (the fewest labels per row:
    # 5 steps x 6 examples x 5 bits of train)
    assert split["accuracy"].to_numpy() == pytest.approx(whole["accuracy"].to_numpy(), abs=1 / 150)


def test_accumulated_gradient_weights_each_micro_batch_by_its_size():
    """One train_step over 6 examples in micro-batches of 4 and 2 leaves the gradient of the
    whole batch of 6 (clipped the same way); the unweighted sum of the two micro-batch
    gradients would not be close to it (so the comparison can tell)."""
    from contextlib import nullcontext

    from fpt.train import Accumulator, build_run, train_step

    spec = RunSpec.from_json({**ACCUM.to_json(), "batch_size": 6, "micro_batch_size": 6})
    _, task, model = build_run(spec, torch.device("cpu"))
    model.eval()  # no dropout: only the accumulation differs; train_step keeps the mode
    batch = task.train_batch(6, torch.Generator().manual_seed(0))

    def grad_of(micro: int) -> torch.Tensor:
        m = copy.deepcopy(model)
        params = [p for p in m.parameters() if p.requires_grad]
        acc = Accumulator("cpu")
        sgd = torch.optim.SGD(params, lr=0.0)  # steps without moving: the gradient stays
        train_step(m, task, batch, sgd, params, micro, nullcontext, acc)
        assert acc.n == batch.y.numel()
        return torch.cat([p.grad.flatten() for p in params])

    whole, split = grad_of(6), grad_of(4)
    # float32 sums in another order: ~1e-8 here, against components up to ~0.7 (norm 1)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)

    m = copy.deepcopy(model)
    params = [p for p in m.parameters() if p.requires_grad]
    unweighted = torch.zeros_like(whole)
    for mb in batch.split(4):
        m.zero_grad()
        task.loss(m(mb.x, mb.lengths), mb.y).backward()
        unweighted += torch.cat([p.grad.flatten() for p in params])
    unweighted /= max(1.0, unweighted.norm().item())  # clipped at 1.0, as train_step does
    assert not torch.allclose(unweighted, whole, rtol=1e-5, atol=1e-6)


SHORT = RunSpec(**{**SPEC.to_json(), "steps": 30})


def _checkpoint_at_step_10(out) -> dict:
    """A run of SHORT trained 10 steps on CPU and checkpointed there; its checkpoint state."""
    from fpt.train import setup

    run = setup(SHORT, out, device="cpu", threads=1)
    run.record()
    for _ in range(10):
        run.loop.advance()
    run.save()
    return checkpoint.load_latest(out / "checkpoint", SHORT.to_json())


def test_a_cpu_checkpoint_records_its_device_and_no_gpu_states(tmp_path):
    rng = _checkpoint_at_step_10(tmp_path)["rng"]
    assert rng["device"] == "cpu"
    assert "cuda" not in rng


@pytest.mark.parametrize("recorded", [True, False], ids=["device-recorded", "older-checkpoint"])
def test_a_resume_on_another_device_reseeds_its_streams_and_goes_on(tmp_path, caplog, recorded):
    """A checkpoint made on CUDA resumed on the CPU (the same happens the other way): the
    CUDA generator's state (16 bytes, Philox) cannot be loaded into a CPU generator. The
    mismatch is logged and the run goes on from the checkpoint's step with streams reseeded
    from its seed and step: deterministic, and its rows before the step are the checkpoint's.
    Older checkpoints did not record the device; a state of the wrong size says it for them."""
    results = []
    for name in ("a", "b"):
        out = tmp_path / name
        state = _checkpoint_at_step_10(out)
        state["rng"]["data"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
        if recorded:
            state["rng"]["device"] = "cuda"
        else:
            state["rng"].pop("device")
        checkpoint.save(out / "checkpoint", state)
        with caplog.at_level("WARNING", logger="fpt.rng"):
            results.append(read_run(train(SHORT, out, device="cpu", handle_signals=False)))
        assert "RNG states do not carry over between devices" in caplog.text
        assert "reseeded from seed 0 and step 10" in caplog.text
        caplog.clear()
    a, b = results
    assert a["step"].max() == SHORT.steps
    pd.testing.assert_frame_equal(a[COMPARE], b[COMPARE])  # the reseeded run is deterministic
    straight = read_run(train(SHORT, tmp_path / "straight", device="cpu", handle_signals=False))
    first = a[a["step"] == 0][COMPARE].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        first, straight[straight["step"] == 0][COMPARE].reset_index(drop=True)
    )
