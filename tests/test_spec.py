"""RunSpec: one run, one path, however the spec is made."""

from __future__ import annotations

from fpt.spec import RunSpec


def test_micro_batch_larger_than_the_batch_is_clamped_so_the_run_has_one_path():
    by_hand = RunSpec(task="bit_xor", backbone="gpt2", size="small", batch_size=4)
    assert by_hand.micro_batch_size == 4  # the default (16) exceeds the batch
    explicit = RunSpec(
        task="bit_xor", backbone="gpt2", size="small", batch_size=4, micro_batch_size=4
    )
    assert by_hand == explicit and by_hand.path == explicit.path
    assert RunSpec.from_json(by_hand.to_json()) == by_hand
    assert (
        RunSpec(task="bit_xor", backbone="gpt2", size="small", batch_size=32).micro_batch_size == 16
    )
