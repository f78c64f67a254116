import logging

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
