"""Fidelity options of the tasks: shapes from the options alone (`Task.shapes`), training on
the whole training set (`val_size: 0`, `Task.has_val`), and the reference's readout for
ListOps and homology (`readout: reference`). Data tasks run on the tiny files in the real
formats that tests/test_tasks_data.py writes."""

from __future__ import annotations

import pytest
import torch

from fpt.tasks import TASKS, make_task
from fpt.tasks.base import HeadSpec, InputSpec
from tests import test_tasks_data

# The fixture of tests/test_tasks_data.py: ListOps, MNIST, CIFAR-10 and homology files in the
# real on-disk formats.
data_dir = test_tasks_data.data_dir

# ---------------------------------------------------------------- shapes without data

# (task, options, expected input, expected head): computed from the options alone.
EXPECTED_SHAPES = [
    ("bit_memory", {}, InputSpec("continuous", 50, 120), HeadSpec(20, 50, 2)),
    (
        "bit_memory",
        {"n_bits": 100, "patch": 10, "n_strings": 3},
        InputSpec("continuous", 10, 40),
        HeadSpec(10, 10, 2),
    ),
    ("bit_xor", {}, InputSpec("continuous", 1, 10), HeadSpec(5, 1, 2)),
    ("bit_xor", {"n_bits": 7}, InputSpec("continuous", 1, 14), HeadSpec(7, 1, 2)),
    ("mnist", {}, InputSpec("continuous", 16, 49), HeadSpec(1, 1, 10)),
    ("cifar10", {}, InputSpec("continuous", 48, 64), HeadSpec(1, 1, 10)),
    ("cifar10", {"patch_channels": "gray"}, InputSpec("continuous", 16, 64), HeadSpec(1, 1, 10)),
    ("cifar10_lra", {}, InputSpec("continuous", 1, 1024), HeadSpec(1, 1, 10)),
    ("digits", {}, InputSpec("continuous", 4, 16), HeadSpec(1, 1, 10)),
    ("listops", {}, InputSpec("tokens", 15, 512), HeadSpec(1, 1, 10)),
    ("listops", {"tokenization": "fixed"}, InputSpec("tokens", 18, 1024), HeadSpec(1, 1, 10)),
    (
        "listops",
        {"max_length": 64, "readout": "reference"},
        InputSpec("tokens", 15, 64),
        HeadSpec(1, 1, 10),
    ),
    ("homology", {}, InputSpec("tokens", 30, 1024), HeadSpec(1, 1, 1195)),
    ("homology", {"max_length": 32}, InputSpec("tokens", 30, 32), HeadSpec(1, 1, 1195)),
]


@pytest.mark.parametrize(("task", "options", "inp", "head"), EXPECTED_SHAPES)
def test_shapes_come_from_the_options_alone(task, options, inp, head, tmp_path):
    # no data dir is given to shapes(): nothing is read
    assert TASKS[task].shapes(options) == (inp, head)


def test_shapes_reject_bad_options_as_the_constructor_does():
    with pytest.raises(ValueError, match="patch_channels"):
        TASKS["cifar10"].shapes({"patch_channels": "rgbx"})
    with pytest.raises(ValueError, match="grayscale"):
        TASKS["cifar10_lra"].shapes({"patch_channels": "rgb"})
    with pytest.raises(ValueError, match="multiple of patch"):
        TASKS["bit_memory"].shapes({"n_bits": 99, "patch": 10})
    with pytest.raises(ValueError, match="tokenization"):
        TASKS["listops"].shapes({"tokenization": "brackets"})
    for task in ("listops", "homology"):
        with pytest.raises(ValueError, match="readout"):
            TASKS[task].shapes({"readout": "first_token"})


# Every registered task, built offline (small val sizes for the tiny image files).
BUILT = [
    ("bit_memory", {}),
    ("bit_memory", {"n_bits": 100, "patch": 10, "n_strings": 3}),
    ("bit_xor", {"n_bits": 7}),
    ("digits", {}),
    ("mnist", {"val_size": 5}),
    ("cifar10", {"val_size": 4}),
    ("cifar10", {"val_size": 4, "patch_channels": "gray"}),
    ("cifar10_lra", {"val_size": 4}),
    ("listops", {}),
    ("listops", {"tokenization": "fixed", "max_length": 40}),
    ("listops", {"readout": "reference"}),
    ("homology", {"max_length": 32}),
    ("homology", {"readout": "reference"}),
]


def test_every_task_takes_its_specs_from_shapes(data_dir):
    assert {t for t, _ in BUILT} == set(TASKS), "add the new task to BUILT"
    for name, options in BUILT:
        task = make_task(name, options=options, data_dir=data_dir)
        assert TASKS[name].shapes(options) == (task.input, task.head), (name, options)


# ---------------------------------------------------------------- val_size: 0


def test_images_train_on_the_whole_training_set_with_val_size_0(data_dir):
    d = str(data_dir)
    cases = [("mnist", 20, 6), ("cifar10", 20, 6), ("cifar10_lra", 20, 6), ("digits", 1497, 300)]
    for name, n_train, n_test in cases:
        cls = TASKS[name]
        assert cls.has_val({}) and not cls.has_val({"val_size": 0})
        task = make_task(name, options={"val_size": 0}, data_dir=d)
        assert task.split_sizes() == {"train": n_train, "test": n_test}, name
        assert task.eval_splits == ("test",)
        assert cls.eval_splits == ("val", "test")  # the class default is untouched
        b = task.train_batch(4, torch.Generator().manual_seed(0))
        assert b.x.shape[:2] == (4, task.input.n_tokens)
    # the whole training file, in order: exactly the examples a held-out split is cut from
    full = make_task("mnist", options={"val_size": 0}, data_dir=d)
    part = make_task("mnist", options={"val_size": 5}, data_dir=d)
    both = torch.cat([part.splits["train"].y, part.splits["val"].y])
    assert sorted(both.tolist()) == sorted(full.splits["train"].y.tolist())


def test_val_size_errors_name_the_option_and_the_fix(data_dir):
    d = str(data_dir)
    with pytest.raises(ValueError, match=r"mnist: val_size=-1 is negative.*val_size: 0"):
        make_task("mnist", options={"val_size": -1}, data_dir=d)
    with pytest.raises(ValueError, match=r"val_size=20 holds out the whole.*below 20.*val_size: 0"):
        make_task("mnist", options={"val_size": 20}, data_dir=d)
    with pytest.raises(ValueError, match=r"listops: val_size=-2 is negative"):
        make_task("listops", options={"val_size": -2}, data_dir=d)
    with pytest.raises(ValueError, match=r"val_size=-1 is negative"):
        TASKS["cifar10"].has_val({"val_size": -1})


def test_listops_faithful_val_size_0_trains_on_the_whole_training_file(data_dir):
    d = str(data_dir)
    cls = TASKS["listops"]
    assert not cls.has_val({"val_size": 0})
    assert cls.has_val({}) and cls.has_val({"val_size": 3})
    # fixed reads its val split from basic_val.tsv: val_size does not apply
    assert cls.has_val({"tokenization": "fixed", "val_size": 0})
    task = make_task("listops", options={"val_size": 0}, data_dir=d)
    assert task.split_sizes() == {"train": 20, "test": 3}
    assert task.eval_splits == ("test",) and cls.eval_splits == ("val", "test")
    for name in ("bit_memory", "bit_xor", "homology"):
        assert TASKS[name].has_val({})


# ---------------------------------------------------------------- readout


def _pairs(a, b, split: str, batch_size: int):
    return list(
        zip(a.eval_batches(split, batch_size), b.eval_batches(split, batch_size), strict=True)
    )


def test_listops_reference_readout_pads_to_max_length_without_lengths(data_dir):
    d = str(data_dir)
    default = make_task("listops", data_dir=d)
    last = make_task("listops", options={"readout": "last_token"}, data_dir=d)
    ref = make_task("listops", options={"readout": "reference"}, data_dir=d)
    assert ref.input == default.input  # same model: 512 positions, vocab 15
    for split in ("val", "test"):
        for (bd, bl), (_, br) in zip(
            _pairs(default, last, split, 2), _pairs(default, ref, split, 2), strict=True
        ):
            # last_token is today's behaviour, bit for bit
            assert torch.equal(bd.x, bl.x) and torch.equal(bd.lengths, bl.lengths)
            assert bd.x.shape[1] == int(bd.lengths.max()) < 512
            # reference: every expression padded with 0 to 512, no lengths
            assert br.lengths is None and br.x.shape == (len(bd), 512)
            assert br.x.dtype == torch.int64 and torch.equal(br.y, bd.y)
            w = bd.x.shape[1]
            assert torch.equal(br.x[:, :w], bd.x) and (br.x[:, w:] == 0).all()
    tb = ref.train_batch(3, torch.Generator().manual_seed(5))
    td = default.train_batch(3, torch.Generator().manual_seed(5))
    assert tb.lengths is None and tb.x.shape == (3, 512)
    assert torch.equal(tb.x[:, : td.x.shape[1]], td.x) and torch.equal(tb.y, td.y)

    # The model then applies no mask and reads the last position (a pad token here).
    from fpt.models import build_model

    torch.manual_seed(0)
    model = build_model(ref, "gpt2", "tiny", "random", "fpt").eval()
    hidden = model.backbone(model.input_layer(tb.x), attention_mask=None)
    with torch.no_grad():
        assert torch.allclose(model(tb.x, tb.lengths), model.head_logits(hidden[:, -1:]))


def test_homology_reference_readout_pads_each_batch_to_its_longest(data_dir):
    d = str(data_dir)
    opts = {"max_length": 64}
    default = make_task("homology", options=opts, data_dir=d)
    last = make_task("homology", options={**opts, "readout": "last_token"}, data_dir=d)
    ref = make_task("homology", options={**opts, "readout": "reference"}, data_dir=d)
    assert ref.input == default.input
    for split in ref.eval_splits:
        pairs = _pairs(default, ref, split, 2)
        for (bd, bl), (_, br) in zip(_pairs(default, last, split, 2), pairs, strict=True):
            assert torch.equal(bd.x, bl.x) and torch.equal(bd.lengths, bl.lengths)
            # as TAPE's collate: padded with 0 to the batch's longest sequence, no lengths
            assert br.lengths is None and torch.equal(br.x, bd.x) and torch.equal(br.y, bd.y)
            assert br.x.shape[1] == int(bd.lengths.max())
        # evaluation keeps the length-sorted batches
        widths = [br.x.shape[1] for _, br in pairs]
        assert widths == sorted(widths)
    tb = ref.train_batch(3, torch.Generator().manual_seed(5))
    td = default.train_batch(3, torch.Generator().manual_seed(5))
    assert tb.lengths is None and torch.equal(tb.x, td.x) and tb.x.shape[1] == int(td.lengths.max())
