import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# No model hub in tests: from_pretrained must find local folders or fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory) -> Path:
    """A weights dir holding a tiny GPT-2 saved with save_pretrained (the real on-disk
    format), so init=pretrained exercises GPT2Model.from_pretrained offline."""
    from transformers import GPT2Config, GPT2Model

    from fpt.models.backbones import CONFIG_DIR

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(1234)
    GPT2Model(GPT2Config.from_json_file(CONFIG_DIR / "gpt2-tiny.json")).save_pretrained(
        d / "gpt2-tiny"
    )
    return d


SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]


@pytest.fixture(scope="session")
def local_test_grid(tmp_path_factory, tiny_weights_dir):
    """The .test grid run end to end by the local executor: (work dir, command)."""
    work = tmp_path_factory.mktemp("wf")
    cmd = [
        *SNAKEMAKE,
        "--cores",
        "2",
        "--directory",
        str(work),
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        "--config",
        f"weights_dir={tiny_weights_dir}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return work, cmd
