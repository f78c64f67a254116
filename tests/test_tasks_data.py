"""Data tasks on tiny files the tests write in the real on-disk formats: LRA ListOps TSV,
torchvision's MNIST idx and CIFAR-10 pickles, TAPE's LMDB; plus the ListOps generator, the
offline digits task, augmentation, download checks and a short training run per task."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import statistics

import numpy as np
import pandas as pd
import pytest
import torch

from fpt.tasks import DATASETS, make_task, required_files
from fpt.tasks.images import augment, patchify
from fpt.tasks.listops_gen import GenParams, write_files

LISTOPS_LINES = [
    ("( ( ( ( [MAX 2 ) 9 ) 4 ) ] )", 9),
    ("( ( ( ( ( [MIN 3 ) ( ( ( [SM 5 ) 8 ) ] ) ) 7 ) 4 ) ] )", 3),
    ("( ( ( ( [MED 1 ) 2 ) 7 ) ] )", 2),
    ("( ( ( [SM 9 ) 9 ) ] )", 8),
    ("( ( ( ( ( [MED 1 ) 2 ) 6 ) 8 ) ] )", 4),
]


# ---------------------------------------------------------------- fixtures in real formats


def record_as_fetched(data_dir, dataset, files):
    """Write `dataset`'s marker recording the SHA-256 of `files`, as `fpt fetch-data` does
    for the files it verified: the fixtures' pickle files (CIFAR-10 batches, homology
    data.mdb) are then read like fetched ones (fpt.data.trust)."""
    from fpt.data import download as dl

    dl.write_marker(dataset, data_dir, {dl.relpath(f, data_dir): dl.sha256sum(f) for f in files})


def write_cifar10(cf, rng, sizes):
    """CIFAR-10 python pickles in `cf`: {batch name: number of images}."""
    cf.mkdir(parents=True, exist_ok=True)
    for name, n in sizes.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * n,
        }
        with open(cf / name, "wb") as f:
            pickle.dump(batch, f)
    return [cf / name for name in sizes]


HOMOLOGY_SPLITS = (
    "train",
    "valid",
    "test_fold_holdout",
    "test_superfamily_holdout",
    "test_family_holdout",
)
HOMOLOGY_SEQS = ["MKTAYIAKQR", "GAVLIPFW", "ACDEFGHIKLMNPQRSTVWY" * 3, "MJJB", "QQQ"]


def write_homology(rh, seqs=HOMOLOGY_SEQS):
    """TAPE remote homology LMDBs in `rh`; returns their data.mdb files."""
    import lmdb

    rh.mkdir(parents=True, exist_ok=True)
    for split in HOMOLOGY_SPLITS:
        env = lmdb.open(str(rh / f"remote_homology_{split}.lmdb"), map_size=1 << 22)
        with env.begin(write=True) as txn:
            txn.put(b"num_examples", pickle.dumps(len(seqs)))
            for i, s in enumerate(seqs):
                item = {"primary": s, "fold_label": (i * 7) % 1195, "protein_length": len(s)}
                txn.put(str(i).encode(), pickle.dumps(item))
        env.close()
    return [rh / f"remote_homology_{split}.lmdb" / "data.mdb" for split in HOMOLOGY_SPLITS]


def _write_tsv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    # LRA wrote its files with csv.writer (\r\n line ends)
    path.write_text("Source\tTarget\r\n" + "".join(f"{s}\t{t}\r\n" for s, t in rows))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    # LRA ListOps
    lo = d / "listops-1000"
    _write_tsv(lo / "basic_train.tsv", LISTOPS_LINES * 4)
    _write_tsv(lo / "basic_val.tsv", LISTOPS_LINES[:3])
    _write_tsv(lo / "basic_test.tsv", LISTOPS_LINES[3:])
    # MNIST, torchvision layout: train files gzipped, test files plain (both are accepted)
    raw = d / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, opener, suffix in (("train", 20, gzip.open, ".gz"), ("t10k", 6, open, "")):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with opener(raw / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
            f.write((2051).to_bytes(4, "big") + b"".join(x.to_bytes(4, "big") for x in (n, 28, 28)))
            f.write(imgs.tobytes())
        with opener(raw / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
            f.write((2049).to_bytes(4, "big") + n.to_bytes(4, "big") + labels.tobytes())
    # CIFAR-10 python pickles and TAPE remote homology LMDBs (pickled records), each with
    # the marker a verified fetch writes (fpt.data.trust reads them only then)
    sizes = {**{f"data_batch_{i}": 4 for i in range(1, 6)}, "test_batch": 6}
    record_as_fetched(d, "cifar10", write_cifar10(d / "cifar-10-batches-py", rng, sizes))
    record_as_fetched(d, "homology", write_homology(d / "remote_homology"))
    return d


# ---------------------------------------------------------------- ListOps


def _evaluate(tokens: list[str]) -> int:
    """An independent evaluator of LRA's notation: parentheses are grouping noise, an
    operator token opens a list that `]` closes."""
    stack: list[list] = []
    result = None
    for tok in tokens:
        if tok in "()":
            continue
        if tok.startswith("["):
            stack.append([tok[1:]])
        elif tok == "]":
            op, *args = stack.pop()
            val = {
                "MIN": min,
                "MAX": max,
                "MED": lambda a: int(statistics.median(a)),
                "SM": lambda a: sum(a) % 10,
            }[op](args)
            if stack:
                stack[-1].append(val)
            else:
                result = val
        else:
            stack[-1].append(int(tok))
    assert result is not None and not stack
    return result


def _depth_args(tokens):
    depth = max_depth = max_args = 0
    counts = []
    for tok in tokens:
        if tok.startswith("["):
            depth += 1
            max_depth = max(max_depth, depth)
            if counts:
                counts[-1] += 1
            counts.append(0)
        elif tok == "]":
            depth -= 1
            max_args = max(max_args, counts.pop())
        elif tok not in "()":
            counts[-1] += 1
    return max_depth, max_args


def test_listops_faithful_drops_brackets_and_reports_the_val_file_as_test(data_dir):
    task = make_task("listops", options={"val_size": 4}, data_dir=str(data_dir))
    assert (task.input.kind, task.input.dim, task.input.n_tokens) == ("tokens", 15, 512)
    assert task.head.n_classes == 10 and task.eval_splits == ("val", "test")
    assert task.split_sizes() == {"train": 16, "val": 4, "test": 3}
    test = task.splits["test"]  # = basic_val.tsv, as the paper did
    # "( ( ( ( [MAX 2 ) 9 ) 4 ) ] )" -> MAX 2 9 4: ids 11, 3, 10, 5
    assert test.lengths[0] == 4 and test.x[0, :4].tolist() == [11, 3, 10, 5]
    assert test.y.tolist() == [9, 3, 2]
    (b,) = list(task.eval_batches("test", 8))
    assert b.x.dtype == torch.int64 and b.y.shape == (3, 1)
    assert (b.x[torch.arange(b.x.shape[1])[None] >= b.lengths[:, None]] == 0).all()  # pad 0


def test_listops_fixed_keeps_brackets_and_real_splits(data_dir):
    task = make_task("listops", options={"tokenization": "fixed"}, data_dir=str(data_dir))
    assert (task.input.dim, task.input.n_tokens) == (18, 1024)
    assert task.split_sizes() == {"train": 20, "val": 3, "test": 2}
    from fpt.tasks.listops import FIXED_VOCAB

    s = task.splits["val"]
    toks = [FIXED_VOCAB[i] for i in s.x[0, : s.lengths[0]].tolist()]
    assert toks == LISTOPS_LINES[0][0].split()
    assert task.splits["test"].y.tolist() == [8, 4]
    short = make_task(
        "listops", options={"tokenization": "fixed", "max_length": 8}, data_dir=data_dir
    )
    assert short.input.n_tokens == 8 and int(short.splits["train"].lengths.max()) == 8


def test_listops_generator_matches_an_independent_evaluator(tmp_path):
    params = GenParams(min_length=5, max_length=40, n_train=60, n_val=5, n_test=5, seed=3)
    out = write_files(params, tmp_path / "a")
    lines = (out / "basic_train.tsv").read_text().splitlines()
    assert lines[0] == "Source\tTarget" and len(lines) == 61
    ops = set()
    for line in lines[1:]:
        src, tgt = line.split("\t")
        toks = src.split()
        assert int(tgt) == _evaluate(toks)
        length = sum(t not in "()" for t in toks)
        assert 5 < length < 40
        depth, args = _depth_args(toks)
        assert depth <= 10 and args <= 10
        ops |= {t for t in toks if t.startswith("[")}
    assert ops == {"[MIN", "[MAX", "[MED", "[SM"}
    again = write_files(params, tmp_path / "b")
    for split in ("train", "val", "test"):
        name = f"basic_{split}.tsv"
        assert (out / name).read_bytes() == (again / name).read_bytes()
    assert GenParams.from_name(params.name) == params


def test_make_listops_cli_and_generated_source(tmp_path):
    from fpt.cli import main

    name = "len5-30_depth10_args10_n40-8-8_seed1"
    assert main(["make-listops", "--from-name", name, "--data-dir", str(tmp_path)]) == 0
    opts = {
        "source": "generated",
        "gen_min_length": 5,
        "gen_max_length": 30,
        "gen_n_train": 40,
        "gen_n_val": 8,
        "gen_n_test": 8,
        "gen_seed": 1,
        "max_length": 64,
    }
    assert required_files("listops", opts, tmp_path) == [
        str(tmp_path / "listops-generated" / name / ".complete")
    ]
    task = make_task("listops", options=opts, data_dir=tmp_path)
    assert task.split_sizes() == {"train": 36, "val": 4, "test": 8}
    with pytest.raises(FileNotFoundError, match="rule make_listops"):
        make_task("listops", options={**opts, "gen_seed": 2}, data_dir=tmp_path)
    with pytest.raises(ValueError, match="data_dir is not a task option.*--data-dir"):
        make_task("listops", options={**opts, "data_dir": str(tmp_path)})


# ---------------------------------------------------------------- images


def test_mnist_cifar_shapes_and_labels(data_dir):
    d = str(data_dir)
    mnist = make_task("mnist", options={"val_size": 5}, data_dir=d)
    assert (mnist.input.n_tokens, mnist.input.dim) == (49, 16)
    assert mnist.split_sizes() == {"train": 15, "val": 5, "test": 6}
    b = next(iter(mnist.eval_batches("test", 10)))
    assert b.x.shape == (6, 49, 16) and b.y[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    # first token = the top-left 4x4 patch, row-major
    from fpt.tasks.images import load_mnist

    imgs, _ = load_mnist(data_dir, "test")
    assert torch.allclose(b.x[0, 0], torch.from_numpy(imgs[0, 0, :4, :4].reshape(-1)) / 255.0)

    c10 = make_task("cifar10", options={"val_size": 4}, data_dir=d)
    assert (c10.input.n_tokens, c10.input.dim) == (64, 48)
    assert c10.train_batch(3, torch.Generator().manual_seed(0)).x.shape == (3, 64, 48)
    gray = make_task("cifar10", options={"val_size": 4, "patch_channels": "gray"}, data_dir=d)
    assert (gray.input.n_tokens, gray.input.dim) == (64, 16)
    lra = make_task("cifar10_lra", options={"val_size": 4}, data_dir=d)
    assert (lra.input.n_tokens, lra.input.dim) == (1024, 1)
    eb = next(iter(lra.eval_batches("test", 4)))
    assert eb.x.shape == (4, 1024, 1) and eb.x.min() >= -1 and eb.x.max() <= 1
    with pytest.raises(ValueError, match="patch_channels"):
        make_task("cifar10", options={"patch_channels": "rgbx"}, data_dir=d)


def test_digits_is_offline_and_split_is_seeded():
    a, b = make_task("digits"), make_task("digits")
    assert (a.input.n_tokens, a.input.dim) == (16, 4)
    assert a.split_sizes() == {"train": 1197, "val": 300, "test": 300}
    assert torch.equal(a.splits["test"].x, b.splits["test"].x)
    c = make_task("digits", options={"data_seed": 7})
    assert not torch.equal(a.splits["test"].y, c.splits["test"].y)
    x = next(iter(a.eval_batches("val", 512))).x
    assert x.shape == (300, 16, 4) and 0 <= x.min() and x.max() <= 1


def test_digits_reader_gives_exactly_sklearns_load_digits_arrays():
    """BENCHMARKS.md: fpt reads scikit-learn's digits.csv.gz itself (no sklearn import) and
    gets the arrays `sklearn.datasets.load_digits` gives, element for element."""
    from sklearn.datasets import load_digits

    from fpt.tasks.images import _load_digits

    images, target = _load_digits()
    ref = load_digits()
    assert images.shape == (1797, 8, 8)
    # strict: shapes and dtypes must match too (float64 images, int64 labels)
    np.testing.assert_array_equal(images, ref.images, strict=True)
    np.testing.assert_array_equal(target, ref.target, strict=True)


def test_patchify_matches_the_reference_rearrange():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    # 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)': token 1 = patch row 0, col 1
    assert torch.equal(p[1, 1], x[1, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1))


def test_augmentation_keeps_shapes_and_follows_the_generator():
    x = torch.rand(6, 3, 32, 32)
    a = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(2)))
    # without crop and rotation only flips remain: each image is itself or its mirror
    f = augment(x, torch.Generator().manual_seed(3), pad=0, degrees=0.0)
    for i in range(6):
        assert torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1))


# ---------------------------------------------------------------- homology


def test_homology_tape_vocab_and_splits(data_dir):
    from fpt.tasks.homology import IUPAC_VOCAB

    task = make_task("homology", options={"max_length": 32}, data_dir=str(data_dir))
    assert len(IUPAC_VOCAB) == 30 and IUPAC_VOCAB[:5] == [
        "<pad>",
        "<mask>",
        "<cls>",
        "<sep>",
        "<unk>",
    ]
    assert IUPAC_VOCAB[5] == "A" and IUPAC_VOCAB[-1] == "Z" and "J" not in IUPAC_VOCAB
    assert (task.input.kind, task.input.dim, task.input.n_tokens) == ("tokens", 30, 32)
    assert task.head.n_classes == 1195
    assert task.eval_splits == ("val", "test_fold", "test_superfamily", "test_family")
    assert task.split_sizes()["train"] == 4  # the 62-token sequence is dropped from training
    val = task.splits["val"]  # every eval example is kept, cut to max_length
    assert len(val) == 5 and int(val.lengths.max()) == 32
    ids = val.x[0, : val.lengths[0]].tolist()  # <cls> M K T A Y I A K Q R <sep>
    assert ids[0] == 2 and ids[-1] == 3 and ids[1] == IUPAC_VOCAB.index("M")
    assert val.x[2, 31].item() == 3  # a cut sequence still ends with <sep>
    assert val.x[3, 2].item() == 4  # J -> <unk>
    assert val.y.tolist() == [0, 7, 14, 21, 28]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "task,path",
    [
        ("listops", "listops-1000/basic_train.tsv"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
        ("cifar10_lra", "cifar-10-batches-py/data_batch_1"),
        ("homology", "remote_homology/remote_homology_train.lmdb"),
    ],
)
def test_missing_data_names_the_path_and_the_fetch_command(tmp_path, task, path):
    dataset = {"cifar10_lra": "cifar10"}.get(task, task)
    with pytest.raises(FileNotFoundError) as err:
        make_task(task, data_dir=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / path) in msg
    assert f"fpt fetch-data {dataset} --data-dir {tmp_path}" in msg and f"fetch_{dataset}" in msg
    assert required_files(task, {}, tmp_path) == [str(DATASETS[dataset].marker(tmp_path))]


def test_corrupt_files_fail_with_one_clear_message(data_dir, tmp_path, monkeypatch):
    import shutil

    d = tmp_path / "d"
    shutil.copytree(data_dir, d)
    (d / "MNIST/raw/t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 8)
    with pytest.raises(
        ValueError, match=r"t10k-labels-idx1-ubyte is corrupt.*magic.*fetch-data mnist"
    ):
        make_task("mnist", options={"val_size": 5}, data_dir=str(d))
    (d / "cifar-10-batches-py/test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"test_batch was not read: it is a pickle"):
        make_task("cifar10", options={"val_size": 4}, data_dir=str(d))
    # read although unverified (acknowledged): then it is corrupt
    monkeypatch.setenv("FPT_ALLOW_UNVERIFIED_PICKLES", "1")
    with pytest.raises(ValueError, match=r"test_batch is corrupt.*fetch-data cifar10"):
        make_task("cifar10", options={"val_size": 4}, data_dir=str(d))
    (d / "listops-1000/basic_val.tsv").write_text("Src\tTgt\n")
    with pytest.raises(ValueError, match=r"basic_val.tsv is corrupt.*Source.*fetch-data listops"):
        make_task("listops", options={"val_size": 4}, data_dir=str(d))
    lm = d / "remote_homology/remote_homology_valid.lmdb"
    shutil.rmtree(lm)
    lm.write_bytes(b"garbage")
    with pytest.raises(
        ValueError, match=r"remote_homology_valid.lmdb is corrupt.*fetch-data homology"
    ):
        make_task("homology", data_dir=str(d))


def test_download_is_atomic_and_checks_the_md5(tmp_path):
    from fpt.data.download import download

    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    good = hashlib.md5(src.read_bytes()).hexdigest()
    dest = download(src.as_uri(), tmp_path / "out" / "a.bin", good)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(ValueError, match="md5"):
        download(src.as_uri(), tmp_path / "out" / "b.bin", "0" * 32)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin"]  # no partial left


# ---------------------------------------------------------------- a short run per task


@pytest.mark.parametrize(
    "task,options",
    [
        ("listops", {"val_size": 4}),
        ("mnist", {"val_size": 5}),
        ("cifar10", {"val_size": 4}),
        ("cifar10_lra", {"val_size": 18}),
        ("homology", {"max_length": 64}),
        ("digits", {"val_size": 20, "test_size": 20}),
    ],
)
def test_short_training_run(tmp_path, data_dir, task, options):
    from fpt.metrics import read_run
    from fpt.spec import RunSpec
    from fpt.train import train

    spec = RunSpec(
        task=task,
        backbone="gpt2",
        size="tiny",
        init="random",
        steps=2,
        batch_size=2,
        eval_every=2,
        eval_batch_size=8,
        options=options,
    )
    df = read_run(train(spec, tmp_path / "run", device="cpu", data_dir=data_dir, progress=False))
    t = make_task(task, options=options, data_dir=str(data_dir))
    assert set(df["split"]) == {"train", *t.eval_splits}
    assert df["accuracy"].between(0, 1).all() and np.isfinite(df["loss"]).all()
    assert isinstance(df, pd.DataFrame) and sorted(df["step"].unique()) == [0, 2]
