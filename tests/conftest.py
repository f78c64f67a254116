import os
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
