"""`fpt describe` without data or weights; parameters that can receive a gradient
(`count_params(...)[group]["reachable"]`, fpt.models.reach) and the paper's counting rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from fpt.models import FAMILIES, build_model, count_params
from fpt.models.reach import (
    FINAL_NORM,
    PAPER_CIFAR10_FPT_PARAMS,
    UNREACHABLE,
    paper_count,
    paper_options,
)
from fpt.tasks import TASKS, make_task
from tests.conftest import REPO


def _shapes(task: str, options: dict | None = None) -> SimpleNamespace:
    inp, head = TASKS[task].shapes(options or {})
    return SimpleNamespace(input=inp, head=head)


def _meta_model(task, backbone, size, trainable="fpt", options=None):
    # Counts need shapes only: the meta device builds big models without storage.
    with torch.device("meta"):
        return build_model(_shapes(task, options), backbone, size, "random", trainable)


# ---------------------------------------------------------------- fpt describe, offline


def _describe(tmp_path, *args):
    data, weights, work = tmp_path / "data", tmp_path / "weights", tmp_path / "work"
    for d in (data, weights, work):
        d.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FPT_WEIGHTS_DIR": str(weights),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-m", "fpt", "describe", *args, "--data-dir", str(data)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert not any(any(p.iterdir()) for p in (data, weights))  # nothing downloaded or written
    return json.loads(out.stdout)


def test_describe_cifar10_needs_no_dataset(tmp_path):
    info = _describe(tmp_path, "--task", "cifar10", "--backbone", "gpt2", "--trainable", "fpt")
    assert info["trainable_params"] == 870_154
    assert info["reachable_params"] == 870_154 - (1024 - 64) * 768
    assert info["paper_convention"]["params"] == 105_984
    assert info["paper_convention"]["rule"]
    assert info["weights"] == "architecture only (counts do not need the weights)"
    assert "split_sizes" not in info["task_shape"]
    assert (info["task_shape"]["tokens"], info["task_shape"]["token_dim"]) == (64, 48)


def test_describe_bit_memory_needs_no_weights(tmp_path):
    info = _describe(
        tmp_path,
        "--task",
        "bit_memory",
        "--backbone",
        "gpt2",
        "--size",
        "small",
        "--trainable",
        "fpt",
    )
    # input 50*768 + 768, output 768*100 + 100, 25 layer norms of 2*768, 1024 position rows
    assert info["trainable_params"] == 39_168 + 76_900 + 38_400 + 786_432
    assert info["reachable_params"] == 39_168 + 76_900 + 38_400 + 120 * 768
    assert info["init"] == "pretrained"  # what was asked; counted on the same architecture
    # bit_memory's paper setting is its own: less the io biases and the final layer norm
    assert info["paper_convention"]["params"] == info["reachable_params"] - 768 - 100 - 1536


# ---------------------------------------------------------------- reachable, by hand


def test_gpt2_small_cifar10_counts_per_group():
    model = build_model(_shapes("cifar10"), "gpt2", "small", "random", "fpt")
    counts = count_params(model)
    pos_used = 64 * 768
    assert counts["input"] == {"total": 37_632, "trainable": 37_632, "reachable": 37_632}
    assert counts["output"] == {"total": 7_690, "trainable": 7_690, "reachable": 7_690}
    assert counts["pos"] == {"total": 786_432, "trainable": 786_432, "reachable": pos_used}
    assert counts["ln"] == {"total": 38_400, "trainable": 38_400, "reachable": 38_400}
    for frozen in ("attn", "ff", "unused"):
        assert counts[frozen]["trainable"] == counts[frozen]["reachable"] == 0
    assert counts["all"]["trainable"] == 870_154
    assert counts["all"]["reachable"] == 870_154 - (1024 - 64) * 768 == 132_874
    # the meta-device build that `fpt describe` uses counts the same
    assert count_params(_meta_model("cifar10", "gpt2", "small")) == counts
    # frozen position rows are not trainable, hence not counted as unreachable either
    frozen_pos = count_params(
        build_model(_shapes("cifar10"), "gpt2", "tiny", "random", "output_ln")
    )
    assert frozen_pos["pos"]["reachable"] == 0
    assert frozen_pos["all"]["reachable"] == frozen_pos["all"]["trainable"]


def test_every_family_has_a_reach_and_final_norm_entry():
    families = {fam.backbone_cls.family for fam in FAMILIES.values()}
    assert families <= set(UNREACHABLE) and families <= set(FINAL_NORM)


# (backbone, pos elements that bit_xor's 10 tokens reach): tiny configs, width 64.
BY_HAND = [
    ("gpt2", 10 * 64),  # wpe rows 0..9
    ("minilm", 10 * 64 + 64),  # position rows 0..9, token type row 0
    ("bert", 10 * 64 + 64),
    ("longformer", 10 * 64 + 64),  # position rows 2..11 (pad id 1), token type row 0
    ("vit", 10 * 64),  # the new table's rows 0..9
    ("lstm", 10 * 64),  # the table's rows 0..9
    ("t5", 17 * 4),  # relative positions -9..9: buckets 0..8 and 17..24, 4 heads
]


@pytest.mark.parametrize(("backbone", "pos_reachable"), BY_HAND)
def test_reachable_is_what_gets_a_gradient(backbone, pos_reachable):
    torch.manual_seed(0)
    task = make_task("bit_xor", options={"val_size": 8})
    model = build_model(task, backbone, "tiny", "random", "fpt").eval()  # eval: no dropout
    counts = count_params(model)
    assert counts["pos"]["reachable"] == pos_reachable
    batch = task.eval_set("val")
    task.loss(model(batch.x), batch.y).backward()
    got = sum(
        int((p.grad != 0).sum())
        for m in model.backbone.groups().pos
        for p in m.parameters()
        if p.grad is not None
    )
    assert got == pos_reachable
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(int((p.grad != 0).sum()) for p in trainable) == counts["all"]["reachable"]


# ---------------------------------------------------------------- the paper's count


def test_paper_rule_gives_the_papers_three_cifar10_numbers():
    options = paper_options("cifar10", {"patch_channels": "rgb"})
    assert TASKS["cifar10"].shapes(options)[0].dim == 16  # the paper counted 64 x 16 tokens
    got = {
        size: paper_count(_meta_model("cifar10", "gpt2", size, options=options))
        for size in PAPER_CIFAR10_FPT_PARAMS
    }
    # d * (16 + 10 + 4 L + 64): input and output weights, the blocks' layer norms, 64 rows
    assert got == {"small": 105_984, "medium": 190_464, "large": 299_520}
    for size, published in PAPER_CIFAR10_FPT_PARAMS.items():
        assert abs(got[size] - published) / published < 0.015, size
