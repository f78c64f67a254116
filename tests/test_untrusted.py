"""Data files that are pickles by format (fpt.data.trust): CIFAR-10 batches and the records
of homology's LMDBs are unpickled only when their checksum is the published one or the one
`fpt fetch-data` recorded, else only once `allow_unverified_pickles` acknowledges them.
Fetches here come from a local HTTP server (tests/test_download.py's)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile

import numpy as np
import pytest

from fpt.data import download as dl
from fpt.data import trust
from fpt.tasks import homology, images, make_task
from tests.test_download import Server
from tests.test_tasks_data import record_as_fetched, write_cifar10, write_homology

CIFAR_SIZES = {**{f"data_batch_{i}": 4 for i in range(1, 6)}, "test_batch": 6}
CIFAR_OPTS = {"val_size": 4}
HOMOLOGY_OPTS = {"max_length": 32}


@pytest.fixture(autouse=True)
def _not_acknowledged(monkeypatch):
    monkeypatch.delenv(trust.ENV, raising=False)


class Payload:
    """Unpickling this runs `touch <target>`."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tar_gz(root, members) -> bytes:
    """A .tar.gz of `members` (paths under `root`), named relative to `root`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for m in members:
            tar.add(m, arcname=m.relative_to(root).as_posix())
    return buf.getvalue()


def _assert_refusal(exc, path, dataset):
    msg = str(exc.value)
    assert f"data file {path} was not read" in msg
    assert "pickle" in msg and "run arbitrary code" in msg
    assert f"fpt fetch-data {dataset} --data-dir" in msg  # the verifying fix
    assert "allow_unverified_pickles: true" in msg and trust.ENV in msg  # the acknowledgement
    return msg


# ---------------------------------------------------------------- CIFAR-10


@pytest.fixture
def published_cifar(tmp_path, monkeypatch):
    """Fake CIFAR-10 batches whose md5s stand in for torchvision's published ones, with no
    marker (a torchvision folder placed by hand)."""
    files = write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(0), CIFAR_SIZES)
    monkeypatch.setattr(images, "CIFAR10_FILES", {f.name: _md5(f) for f in files})
    return tmp_path


def test_a_batch_with_the_published_md5_needs_no_marker(published_cifar):
    task = make_task("cifar10", options=CIFAR_OPTS, data_dir=published_cifar)
    assert task.split_sizes() == {"train": 16, "val": 4, "test": 6}


def test_a_tampered_cifar_batch_is_refused_and_read_once_acknowledged(
    published_cifar, monkeypatch, caplog
):
    batch = published_cifar / "cifar-10-batches-py" / "data_batch_2"
    d = pickle.loads(batch.read_bytes())
    d[b"labels"] = [9] * len(d[b"labels"])  # well-formed, but not the published file
    batch.write_bytes(pickle.dumps(d))
    with pytest.raises(trust.UnverifiedPickle) as err:
        make_task("cifar10", options=CIFAR_OPTS, data_dir=published_cifar)
    msg = _assert_refusal(err, batch, "cifar10")
    assert f"is not the published {images.CIFAR10_FILES['data_batch_2']}" in msg
    assert "placed by hand" in msg  # and no marker records it

    monkeypatch.setenv(trust.ENV, "1")
    with caplog.at_level(logging.WARNING, logger="fpt.data"):
        task = make_task("cifar10", options=CIFAR_OPTS, data_dir=published_cifar)
    assert task.split_sizes()["train"] == 16
    assert f"reading {batch} although it is not verified" in caplog.text
    assert "allow_unverified_pickles" in caplog.text


def test_a_crafted_cifar_batch_is_never_unpickled(published_cifar, tmp_path):
    pwned = tmp_path / "pwned"
    batch = published_cifar / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": Payload(pwned), b"labels": []}))
    with pytest.raises(trust.UnverifiedPickle) as err:
        make_task("cifar10", options=CIFAR_OPTS, data_dir=published_cifar)
    _assert_refusal(err, batch, "cifar10")
    assert not pwned.exists()


def test_cifar_data_by_hand_without_a_marker_is_refused(tmp_path):
    """Files that are not torchvision's (the real published md5s) and that no marker
    records: refused, cifar10_lra too."""
    write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(0), CIFAR_SIZES)
    for task in ("cifar10", "cifar10_lra"):
        with pytest.raises(trust.UnverifiedPickle, match=rf"^{task}: .*placed by hand"):
            make_task(task, options=CIFAR_OPTS, data_dir=tmp_path)


def test_fetched_cifar_loads_unacknowledged_and_a_refetch_repairs_a_tampered_batch(
    tmp_path, monkeypatch
):
    src = tmp_path / "src"
    files = write_cifar10(src / "cifar-10-batches-py", np.random.default_rng(1), CIFAR_SIZES)
    archive = _tar_gz(src, files)
    monkeypatch.setattr(images, "CIFAR10_FILES", {f.name: _md5(f) for f in files})
    monkeypatch.setattr(images, "CIFAR10_MD5", hashlib.md5(archive).hexdigest())
    data = tmp_path / "data"
    with Server(archive) as server:
        monkeypatch.setattr(images, "CIFAR10_URL", server.url)
        dl.fetch("cifar10", data)
        rec = dl.recorded_sha256("cifar10", data)
        batch = data / "cifar-10-batches-py" / "data_batch_1"
        assert rec["cifar-10-batches-py/data_batch_1"] == dl.sha256sum(batch)
        assert make_task("cifar10", options=CIFAR_OPTS, data_dir=data).split_sizes()["test"] == 6
        batch.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0]}))
        with pytest.raises(trust.UnverifiedPickle) as err:
            make_task("cifar10", options=CIFAR_OPTS, data_dir=data)
        msg = _assert_refusal(err, batch, "cifar10")
        assert "recorded in" in msg and ".complete" in msg
        dl.fetch("cifar10", data)  # re-extracts the kept archive, md5-checked: no download
        assert len(server.ranges) == 1
    make_task("cifar10", options=CIFAR_OPTS, data_dir=data)


def test_fake_bench_data_is_recorded_as_fetched(tmp_path):
    from fpt.bench.fake_data import fake_data_dir

    fake_data_dir("cifar10", tmp_path, n_train=40, n_test=8)
    assert make_task("cifar10", options=CIFAR_OPTS, data_dir=tmp_path).split_sizes()["test"] == 8


# ---------------------------------------------------------------- homology


def _put_record(lmdb_dir, key: bytes, value: bytes) -> None:
    import lmdb

    env = lmdb.open(str(lmdb_dir), map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


def test_a_homology_lmdb_unlike_its_marker_is_refused_and_never_unpickled(tmp_path, monkeypatch):
    rh = tmp_path / "remote_homology"
    record_as_fetched(tmp_path, "homology", write_homology(rh))
    assert make_task("homology", options=HOMOLOGY_OPTS, data_dir=tmp_path).split_sizes()
    pwned = tmp_path / "pwned"
    lm = rh / "remote_homology_test_fold_holdout.lmdb"
    _put_record(lm, b"0", pickle.dumps(Payload(pwned)))
    with pytest.raises(trust.UnverifiedPickle) as err:
        make_task("homology", options=HOMOLOGY_OPTS, data_dir=tmp_path)
    msg = _assert_refusal(err, lm / "data.mdb", "homology")
    assert "SHA-256" in msg and "recorded in" in msg
    assert not pwned.exists()


def test_homology_by_hand_is_refused_then_read_once_acknowledged(tmp_path, monkeypatch, caplog):
    write_homology(tmp_path / "remote_homology")
    with pytest.raises(trust.UnverifiedPickle, match=r"placed by hand"):
        make_task("homology", options=HOMOLOGY_OPTS, data_dir=tmp_path)
    dl.write_marker("homology", tmp_path, {})  # a marker recording no digests (older fpt)
    with pytest.raises(trust.UnverifiedPickle, match=r"records no SHA-256 for it"):
        make_task("homology", options=HOMOLOGY_OPTS, data_dir=tmp_path)
    monkeypatch.setenv(trust.ENV, "1")
    with caplog.at_level(logging.WARNING, logger="fpt.data"):
        task = make_task("homology", options=HOMOLOGY_OPTS, data_dir=tmp_path)
    assert len(task.splits["val"]) == 5
    assert caplog.text.count("although it is not verified") == 5  # one per split file


def test_fetched_homology_loads_unacknowledged_and_a_refetch_verifies(tmp_path, monkeypatch):
    src = tmp_path / "src"
    mdbs = write_homology(src / "remote_homology")
    archive = _tar_gz(src, [f for m in mdbs for f in sorted(m.parent.iterdir())])
    monkeypatch.setattr(homology, "HOMOLOGY_MD5", hashlib.md5(archive).hexdigest())
    data = tmp_path / "data"
    with Server(archive) as server:
        monkeypatch.setattr(homology, "HOMOLOGY_URL", server.url)
        dl.fetch("homology", data)
        rec = dl.recorded_sha256("homology", data)
        key = "remote_homology/remote_homology_valid.lmdb/data.mdb"
        assert rec[key] == dl.sha256sum(data / key)
        assert len(make_task("homology", options=HOMOLOGY_OPTS, data_dir=data).splits["val"]) == 5
        # a changed LMDB: `fetch-data` re-extracts the kept, md5-checked archive over it
        _put_record(data / key.rsplit("/", 1)[0], b"extra", b"x")
        assert dl.sha256sum(data / key) != rec[key]
        dl.fetch("homology", data)
        assert dl.sha256sum(data / key) == rec[key] and len(server.ranges) == 1
        make_task("homology", options=HOMOLOGY_OPTS, data_dir=data)
        # LMDBs placed by hand (no marker) are verified by the fetch, not adopted
        other = tmp_path / "other"
        write_homology(other / "remote_homology", seqs=["MKT"])
        dl.fetch("homology", other)
        assert len(server.ranges) == 2
        assert dl.recorded_sha256("homology", other)[key] == rec[key]
    assert len(make_task("homology", options=HOMOLOGY_OPTS, data_dir=other).splits["val"]) == 5


# ---------------------------------------------------------------- the acknowledgement


def test_the_acknowledgement_is_machine_level_not_a_run_setting(monkeypatch):
    import yaml

    from fpt import grid
    from tests.conftest import REPO

    raw = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    off = grid.validate_config(dict(raw), source="test")
    on = grid.validate_config({**raw, "allow_unverified_pickles": True}, source="test")
    assert off["allow_unverified_pickles"] is False and on["allow_unverified_pickles"] is True
    assert sorted(grid.expand(off).runs) == sorted(grid.expand(on).runs)  # same run paths
    with pytest.raises(grid.ConfigError, match="allow_unverified_pickles"):
        grid.validate_config({**raw, "allow_unverified_pickles": "yes"}, source="test")
    trust.export(False)
    assert not trust.allowed()
    trust.export(True)  # what the Snakefile does for its jobs when the config says so
    assert os.environ[trust.ENV] == "1" and trust.allowed()


def test_fpt_train_takes_the_acknowledgement_as_a_flag(tmp_path, capsys):
    from fpt.cli import main

    write_cifar10(tmp_path / "data" / "cifar-10-batches-py", np.random.default_rng(0), CIFAR_SIZES)
    args = [
        "train",
        "--task",
        "cifar10",
        "--backbone",
        "gpt2",
        "--size",
        "tiny",
        "--init",
        "random",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--eval-every",
        "1",
        "--eval-batch-size",
        "8",
        "--option",
        "val_size=4",
        "--device",
        "cpu",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 2
    assert "was not read: it is a pickle" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.parquet").exists()
    assert main([*args, "--allow-unverified-pickles"]) == 0
    assert (tmp_path / "run" / "metrics.parquet").exists()
