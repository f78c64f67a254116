import torch

from fpt.tasks import make_task


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_bit_memory_paper_shapes_and_labels():
    task = make_task("bit_memory")
    assert (task.input.kind, task.input.n_tokens, task.input.dim) == ("continuous", 120, 50)
    assert (task.head.n_answer_tokens, task.head.outputs_per_token, task.head.n_classes) == (
        20,
        50,
        2,
    )
    b = task.train_batch(8, _gen())
    assert b.x.shape == (8, 120, 50) and b.y.shape == (8, 1000)
    strings = b.x.reshape(8, 6, 1000)
    memory, query = strings[:, :5], strings[:, 5]
    assert set(memory.unique().tolist()) == {-1.0, 1.0}
    assert set(query.unique().tolist()) <= {-1.0, 0.0, 1.0}
    for i in range(8):
        target = b.y[i].float() * 2 - 1
        # the target is one of the five strings...
        assert any(torch.equal(target, memory[i, j]) for j in range(5))
        # ...and every visible query bit agrees with it; about half are masked
        visible = query[i] != 0
        assert torch.equal(query[i][visible], target[visible])
        assert 0.4 < visible.float().mean() < 0.6


def test_bit_xor_shapes_and_labels():
    task = make_task("bit_xor")
    assert (task.input.n_tokens, task.input.dim, task.head.n_outputs) == (10, 1, 5)
    b = task.train_batch(64, _gen())
    bits = b.x.reshape(64, 2, 5).long()
    assert torch.equal(b.y, bits[:, 0] ^ bits[:, 1])


def test_eval_sets_are_fixed_and_disjoint_from_training_draws():
    a, b = (
        make_task("bit_xor", options={"test_size": 100}),
        make_task("bit_xor", options={"test_size": 100}),
    )
    ta, tb = a.eval_set("test"), b.eval_set("test")
    assert torch.equal(ta.x, tb.x) and torch.equal(ta.y, tb.y)
    assert len(ta) == 100
    assert not torch.equal(a.eval_set("val").x[:50], ta.x[:50])
    batches = list(a.eval_batches("test", 32))
    assert [len(x) for x in batches] == [32, 32, 32, 4]


def test_training_batches_follow_the_generator():
    task = make_task("bit_memory", options={"n_bits": 20, "patch": 5})
    assert torch.equal(task.train_batch(4, _gen(3)).x, task.train_batch(4, _gen(3)).x)
    assert not torch.equal(task.train_batch(4, _gen(3)).x, task.train_batch(4, _gen(4)).x)


def test_loss_and_accuracy_on_hand_made_logits():
    task = make_task("bit_xor")
    y = torch.tensor([[0, 1, 1, 0, 1]])
    logits = torch.zeros(1, 5, 2)
    logits[0, torch.arange(5), y[0]] = 10.0  # all right, confidently
    logits[0, 4] = torch.tensor([10.0, 0.0])  # the last one wrong
    assert task.n_correct(logits, y).item() == 4
    expected = torch.nn.functional.cross_entropy(logits[0], y[0])
    assert torch.allclose(task.loss(logits, y), expected)
    uniform = torch.zeros(1, 5, 2)
    assert torch.allclose(task.loss(uniform, y), torch.log(torch.tensor(2.0)))


def test_bad_bit_memory_patch_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="multiple of patch"):
        make_task("bit_memory", options={"n_bits": 21, "patch": 5})
