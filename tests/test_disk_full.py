"""A full disk while writing a checkpoint, metrics.parquet or a table: a clear error, the
previous file intact, no temporary file left, and a rerun that continues once space is back.

The disk fills for real: the temporary name a write is about to use is made a symlink to
/dev/full, so the kernel answers the real write with ENOSPC through the same code path a
full file system takes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fpt import checkpoint, files
from fpt.analysis.render import Table
from fpt.metrics import read_run
from fpt.spec import RunSpec
from fpt.train import train
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")

SPEC = RunSpec(
    task="bit_xor",
    backbone="gpt2",
    size="tiny",
    init="random",
    steps=30,
    batch_size=8,
    eval_every=10,
    ckpt_every=10,
    options={"n_bits": 5, "val_size": 16, "test_size": 32},
)
COMPARE = ["step", "split", "loss", "accuracy", "diverged", "stop_step"]


def fill(path: Path) -> Path:
    """Make the next atomic write of `path` (by this process) hit a full disk."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.symlink_to("/dev/full")
    return tmp


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name or p.name.startswith("ckpt.new")]


def test_a_full_disk_fails_the_write_with_the_fix_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.md"
    target.write_text("the previous table\n")
    fill(target)
    with pytest.raises(files.DiskFull) as err:
        files.write_text(target, "x" * 100_000)
    msg = str(err.value)
    assert str(target) in msg and "no space left" in msg and "run the same command again" in msg
    assert target.read_text() == "the previous table\n"
    assert not leftovers(tmp_path)


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_the_run_resumes(tmp_path, monkeypatch):
    out = tmp_path / "run"
    ckpt_dir = out / "checkpoint"
    saves = []
    real_save = checkpoint.save

    def save_then_fill(d, state):  # the disk fills after the first checkpoint (step 10)
        saves.append(state["step"])
        if len(saves) == 2:
            fill(d / checkpoint.NEW)
        return real_save(d, state)

    monkeypatch.setattr(checkpoint, "save", save_then_fill)
    with pytest.raises(files.DiskFull, match=r"no space left.*ckpt\.new\.pt"):
        train(SPEC, out, device="cpu", threads=1, progress=False, handle_signals=False)
    assert saves == [10, 20]
    state = checkpoint.load_latest(ckpt_dir, SPEC.to_json())
    assert state is not None and state["step"] == 10  # the last good checkpoint, intact
    assert not leftovers(out) and not (out / "metrics.parquet").exists()

    monkeypatch.setattr(checkpoint, "save", real_save)  # space is back
    got = read_run(train(SPEC, out, device="cpu", threads=1, progress=False))
    alone = read_run(train(SPEC, tmp_path / "alone", device="cpu", threads=1, progress=False))
    key = ["step", "split"]
    pd.testing.assert_frame_equal(
        got[COMPARE].sort_values(key).reset_index(drop=True),
        alone[COMPARE].sort_values(key).reset_index(drop=True),
        check_exact=True,
    )


def test_a_full_disk_at_metrics_parquet_says_so_and_a_rerun_writes_it(tmp_path):
    """Through the command line, as a job runs it: exit 74, the message, no partial file;
    the final checkpoint was written, so the rerun only writes the metrics."""
    out = tmp_path / "run"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from fpt.cli import main\n"
        "out = Path(sys.argv[1])\n"
        "(out).mkdir(parents=True)\n"
        "(out / f'.metrics.parquet.tmp-{os.getpid()}').symlink_to('/dev/full')\n"
        "sys.exit(main(['train', *sys.argv[2:], '--out', str(out), '--device', 'cpu',"
        " '--threads', '1']))\n"
    )
    cmd = [sys.executable, "-c", code, str(out), *SPEC.cli_args()]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert r.returncode == 74, r.stderr[-2000:]
    assert "metrics.parquet" in r.stderr and "no space left on the device" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "metrics.parquet").exists() and not leftovers(out)
    assert checkpoint.load_latest(out / "checkpoint", SPEC.to_json())["step"] == SPEC.steps

    got = read_run(train(SPEC, out, device="cpu", threads=1, progress=False))
    assert got["step"].max() == SPEC.steps and set(got["split"]) == {"train", "val", "test"}


def test_a_full_disk_while_rendering_a_table_keeps_the_previous_files(tmp_path):
    table = Table(title="t", header=["a"], rows=[["1"]], caption="c", data=pd.DataFrame({"a": [1]}))
    out = {ext: tmp_path / f"table1.{ext}" for ext in ("md", "tex", "csv", "html")}
    table.write_to(out)
    before = {ext: p.read_bytes() for ext, p in out.items()}
    new = Table(title="t2", header=["a"], rows=[["2"]], caption="c", data=pd.DataFrame({"a": [2]}))
    fill(out["csv"])
    with pytest.raises(files.DiskFull, match="table1.csv"):
        new.write_to(out)
    assert out["csv"].read_bytes() == before["csv"]  # never a truncated file
    assert out["tex"].read_bytes() != before["tex"]  # written before the disk filled
    assert not leftovers(tmp_path)
