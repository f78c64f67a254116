import pytest
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


@pytest.mark.parametrize("name", ["bit_xor", "bit_memory"])
def test_a_bit_task_with_val_size_0_has_no_val_split(name):
    task = make_task(name, options={"val_size": 0, "test_size": 16})
    assert task.eval_splits == ("test",) and not task.has_val({"val_size": 0})
    assert sum(len(b) for b in task.eval_batches("test", 8)) == 16


def test_eval_sets_are_fixed_and_seeded_apart():
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


def _keys(x: torch.Tensor) -> list[bytes]:
    """Each example's input as bytes, for exact set membership. The bit tasks' values are
    -1, 0, 1: int8 holds them exactly (and maps -0.0 and 0.0 to the same key)."""
    assert torch.equal(x, x.round()) and x.abs().max() <= 1
    return [r.numpy().tobytes() for r in x.reshape(len(x), -1).to(torch.int8)]


def _training_hits(task, eval_keys: set[bytes], seeds=(0, 1, 2), batches=25, size=64) -> int:
    """How many of `batches` training batches per run seed (the training generator is
    seeded with the run's seed, as fpt.train does) equal some val/test example."""
    hits = 0
    for seed in seeds:
        g = _gen(seed)
        for _ in range(batches):
            hits += sum(k in eval_keys for k in _keys(task.train_batch(size, g).x))
    return hits


@pytest.mark.parametrize(
    "name,options",
    [
        ("bit_memory", {}),  # the paper's size: 5 strings of 1000 bits
        ("bit_xor", {"n_bits": 32}),  # the generator itself, on a space of 2^64 inputs
    ],
)
def test_eval_sets_are_disjoint_from_training_draws(name, options):
    """3 run seeds x 25 batches x 64 = 4,800 training examples, none of them equal to any
    of the val (256) or test (1,024) examples."""
    task = make_task(name, options=options)
    eval_keys = {k for s in ("val", "test") for k in _keys(task.eval_set(s).x)}
    assert len(eval_keys) == 256 + 1024  # and val and test share no example either
    assert _training_hits(task, eval_keys) == 0


def test_paper_bit_xor_cannot_keep_training_draws_out_of_its_eval_sets():
    """The paper's Bit XOR has 2 x 5 bits: 2^10 = 1,024 possible inputs, and the 1,024-example
    test set (drawn with replacement) holds most of them, so training draws necessarily
    repeat test examples; only the larger bit tasks above can be disjoint. What holds here
    is that the eval sets are fixed (test_eval_sets_are_fixed_and_seeded_apart)."""
    task = make_task("bit_xor")
    test_keys = set(_keys(task.eval_set("test").x))
    assert 600 < len(test_keys) < 1024
    assert _training_hits(task, test_keys, seeds=(0,), batches=1) > 0


def test_digits_val_and_test_indices_are_disjoint_from_the_training_indices():
    """The dataset task's carving (fpt.tasks.images.Digits): test carved from all 1,797
    images with data_seed + 1, val from the rest with data_seed. The index sets are disjoint
    and cover the data; the task's splits are exactly those images; and training batches
    (drawn from the train split only) never equal a val or test image (the 1,797 digits
    images are all distinct, so equal image <=> same index)."""
    from fpt.tasks.dataset import carve, hold_out
    from fpt.tasks.images import _load_digits

    task = make_task("digits")
    seed = task.options["data_seed"]
    images, target = _load_digits()
    n = len(target)
    rest, test = carve(n, 300, seed + 1)
    train_in_rest, val_in_rest = hold_out("digits", len(rest), 300, seed)
    train, val = rest[train_in_rest], rest[val_in_rest]
    tr, va, te = (set(i.tolist()) for i in (train, val, test))
    assert (len(tr), len(va), len(te)) == (1197, 300, 300)
    assert not tr & va and not tr & te and not va & te
    assert tr | va | te == set(range(n))
    # the task holds exactly those examples (images scaled 0..16 -> 0..255 uint8)
    pixels = torch.from_numpy((images * (255.0 / 16.0)).round().astype("uint8"))[:, None]
    for split, idx in (("train", train), ("val", val), ("test", test)):
        assert torch.equal(task.splits[split].x, pixels[idx]), split
        assert torch.equal(task.splits[split].y, torch.from_numpy(target)[idx]), split
    # distinct images: content identifies the index
    assert len({r.numpy().tobytes() for r in pixels}) == n
    held = {task.splits[s].x[i].numpy().tobytes() for s in ("val", "test") for i in range(300)}
    train_keys = {r.numpy().tobytes() for r in task.splits["train"].x}
    for seed in (0, 1, 2):
        g = _gen(seed)
        for _ in range(20):
            batch = task.train_batch(64, g)
            # a batch holds normalised patches: map back to the stored uint8 image to compare
            img = (batch.x * 255).round().to(torch.uint8)
            stored = img.reshape(64, 4, 4, 2, 2).permute(0, 1, 3, 2, 4).reshape(64, 1, 8, 8)
            keys = [r.numpy().tobytes() for r in stored]
            assert all(k in train_keys for k in keys)
            assert not any(k in held for k in keys)


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


# ---------------------------------------------------------------- the registry


def test_tasks_declare_their_label_order_split_and_datasets():
    from fpt.tasks import (
        DATASETS,
        TASKS,
        paper_tasks,
        reported_split,
        required_files,
        task_label,
        task_order,
    )

    assert paper_tasks() == [
        "bit_memory",
        "bit_xor",
        "listops",
        "mnist",
        "cifar10",
        "cifar10_lra",
        "homology",
    ]
    assert {t: task_label(t) for t in TASKS} == {
        "bit_memory": "Bit Memory",
        "bit_xor": "Bit XOR",
        "listops": "ListOps",
        "mnist": "MNIST",
        "cifar10": "CIFAR-10",
        "cifar10_lra": "C10 LRA",
        "homology": "Homology",
        "digits": "Digits (offline)",
    }
    assert task_label("gone") == "gone"  # metrics of a task not registered here
    assert {t for t in TASKS if reported_split(t) != "test"} == {"homology"}
    assert reported_split("homology") == "val" and reported_split("gone") == "test"
    assert task_order(["digits", "zeta", "homology", "bit_xor", "digits"]) == [
        "bit_xor",
        "homology",
        "digits",
        "zeta",
    ]
    assert sorted(DATASETS) == ["cifar10", "homology", "listops", "mnist"]
    assert {t: [d.name for d in TASKS[t].datasets] for t in TASKS if TASKS[t].datasets} == {
        "listops": ["listops"],
        "mnist": ["mnist"],
        "cifar10": ["cifar10"],
        "cifar10_lra": ["cifar10"],
        "homology": ["homology"],
    }
    assert all(DATASETS[d].fetch is not None for d in DATASETS)
    assert required_files("bit_xor", {}, "d") == [] and required_files("digits", {}, "d") == []


def test_register_refuses_a_taken_name_a_missing_name_and_a_shared_folder():
    from fpt.data import DATASETS, DatasetInfo, register_dataset
    from fpt.tasks import TASKS, register
    from fpt.tasks.bits import BitXOR

    assert register(BitXOR) is BitXOR and TASKS["bit_xor"] is BitXOR  # again: a no-op
    with pytest.raises(ValueError, match="'bit_xor' is already registered by fpt.tasks.bits"):
        register(type("Other", (BitXOR,), {"name": "bit_xor"}))
    with pytest.raises(ValueError, match="set `name` on the class"):
        register(type("Nameless", (BitXOR,), {}))  # an inherited name is not its own
    with pytest.raises(ValueError, match="folder 'MNIST' belongs to dataset 'mnist'"):
        register_dataset(DatasetInfo("mnist2", "MNIST"))
    with pytest.raises(ValueError, match="already declared with folder 'MNIST'"):
        register_dataset(DatasetInfo("mnist", "MNIST2"))
    assert "mnist2" not in DATASETS and TASKS["bit_xor"] is BitXOR


def test_fpt_data_never_imports_the_tasks():
    """The tasks import fpt.data (they declare its datasets), never the other way round."""
    import ast
    from pathlib import Path

    import fpt.data

    for path in Path(fpt.data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            assert not any(n.startswith("fpt.tasks") for n in names), (path.name, names)
