import logging

import pytest
import torch

from fpt import checkpoint

SPEC = {"task": "bit_xor", "steps": 10}


def test_latest_good_checkpoint_wins_and_corruption_falls_back(tmp_path, caplog):
    checkpoint.save(tmp_path, {"spec": SPEC, "step": 1})
    checkpoint.save(tmp_path, {"spec": SPEC, "step": 2})
    assert checkpoint.load_latest(tmp_path, SPEC)["step"] == 2
    # Flip bytes in the newest checkpoint: its checksum no longer matches.
    cur = tmp_path / checkpoint.CURRENT
    data = bytearray(cur.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cur.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        state = checkpoint.load_latest(tmp_path, SPEC)
    assert state["step"] == 1
    assert "corrupt" in caplog.text


def test_truncated_checkpoints_mean_a_fresh_start(tmp_path, caplog):
    checkpoint.save(tmp_path, {"spec": SPEC, "step": 1})
    checkpoint.save(tmp_path, {"spec": SPEC, "step": 2})
    for name in (checkpoint.CURRENT, checkpoint.PREVIOUS):
        (tmp_path / name).write_bytes(b"\x00" * 10)
    with caplog.at_level(logging.WARNING):
        assert checkpoint.load_latest(tmp_path, SPEC) is None
    assert caplog.text.count("corrupt") == 2


def test_checkpoint_of_other_settings_is_ignored(tmp_path):
    checkpoint.save(tmp_path, {"spec": SPEC, "step": 5, "x": torch.zeros(2)})
    assert checkpoint.load_latest(tmp_path, {**SPEC, "steps": 11}) is None
    assert checkpoint.load_latest(tmp_path, SPEC)["step"] == 5


def test_checkpoint_lacking_the_loops_state_is_ignored(tmp_path, caplog):
    """One written by another version of fpt (other state keys): not resumed, with a warning;
    an older generation that has them still is."""
    checkpoint.save(tmp_path, {"spec": SPEC, "step": 1, "rng": 0})
    checkpoint.save(tmp_path, {"spec": SPEC, "step": 2})
    with caplog.at_level(logging.WARNING):
        assert checkpoint.load_latest(tmp_path, SPEC, keys=("step", "rng"))["step"] == 1
    assert "lacks rng" in caplog.text
    assert checkpoint.load_latest(tmp_path, SPEC, keys=("step", "acc")) is None
    assert checkpoint.load_latest(tmp_path, SPEC)["step"] == 2


# ---------------------------------------------------------------- untrusted checkpoints


class _Payload:
    """Unpickling this runs `touch <target>`: what a crafted checkpoint could do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.target}",))


def _plant(path, obj, raw_pickle=False):
    """`obj` written as a checkpoint with a matching sidecar: only the unpickler is left to
    stand in the way."""
    import hashlib
    import io
    import pickle

    if raw_pickle:
        data = pickle.dumps(obj)
    else:
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
    path.write_bytes(data)
    checkpoint._sidecar(path).write_text(hashlib.sha256(data).hexdigest())


def test_a_crafted_checkpoint_is_refused_without_running_it(tmp_path, caplog):
    """A checkpoint that would run a command when unpickled (checksum matching): not
    executed, a warning that it holds something other than tensors and plain data and was
    not loaded, and the run resumes from the previous checkpoint, else from scratch."""
    pwned = tmp_path / "pwned"
    ckpt = tmp_path / "ckpt"
    checkpoint.save(ckpt, {"spec": SPEC, "step": 1})
    checkpoint.save(ckpt, {"spec": SPEC, "step": 2})  # step 1 is now the previous one
    # the same file read the old way runs the command: the payload is real
    probe = tmp_path / "probe.pt"
    _plant(probe, {"spec": SPEC, "step": 2, "x": _Payload(pwned)})
    torch.load(probe, weights_only=False)
    assert pwned.exists()
    pwned.unlink()

    _plant(ckpt / checkpoint.CURRENT, {"spec": SPEC, "step": 2, "x": _Payload(pwned)})
    with caplog.at_level(logging.WARNING):
        state = checkpoint.load_latest(ckpt, SPEC)
    assert state["step"] == 1  # the previous checkpoint
    assert not pwned.exists()
    assert "holds something other than tensors and plain data" in caplog.text
    assert "not loaded" in caplog.text and "posix.system" in caplog.text
    # both generations crafted (a torch zip file and a bare pickle): a fresh start
    caplog.clear()
    _plant(ckpt / checkpoint.PREVIOUS, {"spec": SPEC, "x": _Payload(pwned)}, raw_pickle=True)
    with caplog.at_level(logging.WARNING):
        assert checkpoint.load_latest(ckpt, SPEC) is None
    assert not pwned.exists()
    assert caplog.text.count("holds something other than tensors and plain data") == 2


def test_save_stores_plain_data_and_refuses_what_cannot_be_read_back(tmp_path):
    import numpy as np

    state = {
        "spec": SPEC,
        "step": np.int64(3),
        "rows": [{"accuracy": np.float32(0.5), "torch_version": torch.__version__, "ok": True}],
        "t": (torch.ones(2), 1.5, None),
    }
    checkpoint.save(tmp_path, state)
    got = torch.load(tmp_path / checkpoint.CURRENT, weights_only=True)
    assert type(got["step"]) is int and got["step"] == 3
    row = got["rows"][0]
    assert type(row["accuracy"]) is float and type(row["torch_version"]) is str
    assert row["torch_version"] == str(torch.__version__) and row["ok"] is True
    assert torch.equal(got["t"][0], torch.ones(2)) and got["t"][1:] == (1.5, None)

    class Opaque:
        pass

    other = tmp_path / "other"
    with pytest.raises(TypeError, match=r"state\['rows'\]\[0\]\['x'\] is a .*Opaque"):
        checkpoint.save(other, {"spec": SPEC, "rows": [{"x": Opaque()}]})
    assert not other.exists() or not any(other.iterdir())  # nothing written


def test_a_checkpoint_of_an_earlier_fpt_still_loads(tmp_path):
    """Before `plain`, rows kept torch.__version__ as a TorchVersion: still resumable."""
    _plant(tmp_path / checkpoint.CURRENT, {"spec": SPEC, "rows": [{"v": torch.__version__}]})
    assert checkpoint.load_latest(tmp_path, SPEC)["rows"][0]["v"] == torch.__version__


def test_the_loops_checkpoint_loads_weights_only(tmp_path):
    """Everything Loop.state_dict holds (rows, optimizer, RNG states, accumulator, early
    stopping with its best weights, the spec) reads back under weights_only=True."""
    from fpt.spec import RunSpec
    from fpt.train import Loop, train

    spec = RunSpec(
        task="bit_xor",
        backbone="gpt2",
        size="tiny",
        init="random",
        steps=4,
        batch_size=2,
        eval_every=2,
        eval_batch_size=16,
        patience=2,
        options={"val_size": 16, "test_size": 16},
    )
    train(spec, tmp_path, device="cpu", progress=False, handle_signals=False)
    state = torch.load(tmp_path / "checkpoint" / checkpoint.CURRENT, weights_only=True)
    assert set(Loop.STATE_KEYS) | {"spec"} == set(state)
    assert state["early_stopping"]["best_state"] and state["rows"]
    assert type(state["rows"][0]["torch_version"]) is str  # stored plain, not a TorchVersion
    assert checkpoint.load_latest(tmp_path / "checkpoint", spec.to_json(), Loop.STATE_KEYS)
