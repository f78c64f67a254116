"""Fused packs for every backbone family that packs (`Family.packs`), on a padded token task
(ListOps generated offline, TAPE homology in its LMDB format: batches carry `lengths`, which
go under vmap with the inputs) and an image task (digits, no download): each run of a pack
gets its lone run's metrics. Also what the fused path leans on in torch and transformers
(fpt.fused's docstring), Longformer's written-out forward, and the token tasks' batches,
whose widths come from the host, not the device."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fpt import fused
from fpt.fused import Pack, train_pack
from fpt.metrics import read_run
from fpt.models.families import FAMILIES
from fpt.packs import pack_runs, why_not_packable
from fpt.spec import RunSpec
from fpt.tasks import make_task
from fpt.tasks.listops_gen import GenParams, write_files
from fpt.train import train
from tests.test_fused import _same_run
from tests.test_tasks_data import record_as_fetched, write_cifar10, write_homology

PACKING = [name for name, fam in FAMILIES.items() if fam.packs]

GEN = GenParams(min_length=5, max_length=30, n_train=40, n_val=8, n_test=8, seed=1)
# max_length 12 truncates a third of the expressions: most batches of 8 are 12 wide, so runs
# with different batches still fuse (a pack fuses batches of one shape), while the lengths
# inside a batch differ (the padding is masked per example)
LISTOPS = {
    "source": "generated",
    **{f"gen_{k}": v for k, v in dataclasses.asdict(GEN).items()},
    "max_length": 12,
    "val_size": 8,
}
TASKS = {
    "listops": LISTOPS,
    "homology": {"max_length": 8},
    "digits": {"val_size": 20, "test_size": 20},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_files(GEN, GEN.folder(d))
    record_as_fetched(d, "homology", write_homology(d / "remote_homology"))
    return d


def _pack_specs(family: str, task: str) -> list[RunSpec]:
    """Tiny random-init runs, dropout on (the tiny configs' 0.1). Token tasks: seeds and lrs
    (frozen weights stacked, each run its own dropout and batches; the two seed-1 runs
    draw the same batches, so they always fuse); digits: lrs of one seed, as the grid packs
    random inits (frozen weights held once)."""
    base = RunSpec(
        task=task,
        backbone=family,
        size="tiny",
        init="random",
        steps=4,
        batch_size=8,
        micro_batch_size=4,
        eval_every=2,
        eval_batch_size=16,
        seed=1,
        options=TASKS[task],
    )
    if task == "digits":
        return [dataclasses.replace(base, lr=lr) for lr in (1e-3, 3e-4, 1e-4)]
    runs = ((1, 1e-3), (1, 3e-4), (2, 1e-3))
    return [dataclasses.replace(base, seed=seed, lr=lr) for seed, lr in runs]


CASES = [(f, t) for t in ("listops", "digits") for f in PACKING] + [("bert", "homology")]


@pytest.mark.parametrize("family,task", CASES)
def test_a_pack_gives_each_run_its_lone_metrics(family, task, data_dir, tmp_path, monkeypatch):
    """Within float tolerance (atol 1e-5, as tests/test_fused.py): the stacked matmuls and
    the eager attention path (the lone run's is SDPA) sum in another order; the dropout
    masks are the lone run's bit for bit."""
    specs = _pack_specs(family, task)
    assert why_not_packable(specs) is None
    stacked = []  # (runs, whether lengths went in) of every stacked forward
    forward = Pack.forward

    def spy(self, active, x, lengths):
        stacked.append((len(active), lengths is not None))
        return forward(self, active, x, lengths)

    monkeypatch.setattr(Pack, "forward", spy)
    kw = {"device": "cpu", "threads": 1, "data_dir": data_dir, "handle_signals": False}
    packed = train_pack(specs, [tmp_path / f"p{i}" for i in range(3)], progress=False, **kw)
    assert max(n for n, _ in stacked) == 3, "the runs never fused: the test shows nothing"
    assert {has for _, has in stacked} == {task != "digits"}
    for i, (spec, got) in enumerate(zip(specs, packed, strict=True)):
        alone = train(spec, tmp_path / f"l{i}", progress=False, **kw)
        _same_run(read_run(got), read_run(alone))


def test_the_families_that_do_not_pack_never_share_a_process():
    others = [name for name in FAMILIES if name not in PACKING]
    assert set(PACKING) == {"gpt2", "bert", "minilm", "vit", "t5", "longformer"}
    assert others == ["lstm"]
    for name in others:
        base = RunSpec(task="bit_xor", backbone=name, size="tiny", init="random")
        runs = {s.path: s for s in (dataclasses.replace(base, lr=lr) for lr in (1e-3, 1e-4))}
        assert name in why_not_packable(list(runs.values()))
        assert pack_runs(runs, 3) == {}


def test_longformer_bf16_runs_train_lone():
    """Fused Longformer in bf16 gives non-finite gradients from its first step (its fp32
    packs equal their lone runs, above): the grid trains those runs lone, and says why."""
    base = RunSpec(task="bit_xor", backbone="longformer", size="tiny", init="random")
    for precision, packs in (("fp32", 1), ("bf16", 0)):
        runs = {
            s.path: s
            for s in (dataclasses.replace(base, lr=lr, precision=precision) for lr in (1e-3, 1e-4))
        }
        assert len(pack_runs(runs, 3)) == packs
    assert "bf16 (Family.pack_precisions)" in why_not_packable(list(runs.values()))


# ---------------------------------------------------------------- what fused.py leans on


def test_the_installed_torch_and_transformers_are_the_verified_ones():
    """fpt.fused leans on behaviours of torch and transformers that an upgrade could change
    without an error (its docstring lists them; this file checks them). On a new version:
    run this file, and if it passes add the version to fpt.fused.VERIFIED_WITH."""
    assert fused.unverified_versions() == []


def test_torch_dropout_draws_bernoulli_on_the_input_shape():
    """The lone run's dropout (the global RNG) draws exactly what the pack draws for it from
    its own generator (fpt.fused._per_run_dropout)."""
    x = torch.randn(3, 5, 7)
    for p in (0.1, 0.5):
        torch.manual_seed(11)
        lone = F.dropout(x, p, training=True)
        g = torch.Generator().manual_seed(11)
        noise = torch.empty(x.shape).bernoulli_(1 - p, generator=g).div_(1 - p)
        assert torch.equal(lone, x * noise)
        torch.manual_seed(11)
        assert torch.equal(torch.nn.Dropout(p).train()(x), lone)


def test_the_pack_copy_runs_eager_attention_and_leaves_the_model_alone():
    """Pretrained MiniLM (the packaged weights; from_pretrained leaves it in eval mode): the
    pack's copy holds no weights and runs eager attention; the run's own model keeps SDPA
    and runs no hub kernels."""
    from fpt.models import build_for_spec

    spec = RunSpec(task="bit_xor", backbone="minilm", size="l6", init="pretrained")
    model = build_for_spec(spec, make_task("bit_xor"))
    template = fused.eager_template(model)
    assert template.backbone.model.config._attn_implementation == "eager"
    assert model.backbone.model.config._attn_implementation == "sdpa"
    assert model.backbone.model.use_kernels is False
    assert all(p.is_meta for p in template.parameters())
    assert [n for n, _ in template.named_parameters()] == [n for n, _ in model.named_parameters()]


def test_longformer_forward_is_longformer_models_bit_for_bit():
    """LongformerBackbone runs LongformerModel's steps itself (no global-attention test, a
    sync that vmap cannot trace): the same hidden states and attention maps, and in training
    the same dropout draws, with and without padding, for windows shrunk to a short sequence
    and for sequences padded to a multiple of the window."""
    from fpt.models.build import build_backbone

    torch.manual_seed(0)
    bb = build_backbone("longformer", "tiny", "random")
    for training in (False, True):
        bb.train(training)
        for t in (4, 16, 20):  # window shrunk to 6 and padded; 8, no padding; 8, padded
            x = torch.randn(3, t, bb.width)
            lengths = torch.tensor([t, t - 2, 1])
            for mask in (None, (torch.arange(t)[None] < lengths[:, None]).long()):
                ref_mask = torch.ones(3, t, dtype=torch.long) if mask is None else mask
                torch.manual_seed(5)
                ours = bb(x, mask, output_attentions=True)
                torch.manual_seed(5)
                bb._set_windows(bb.window_for(t))
                ref = bb.model(inputs_embeds=x, attention_mask=ref_mask, output_attentions=True)
                assert torch.equal(ours[0], ref.last_hidden_state)
                assert len(ours[1]) == len(ref.attentions)
                assert all(torch.equal(a, b) for a, b in zip(ours[1], ref.attentions, strict=True))
                torch.manual_seed(5)
                assert torch.equal(bb(x, mask), ref.last_hidden_state)


# ---------------------------------------------------------------- batches without syncs


def _old_to_batch(task, s):
    """Token batches as they were built before, from the device's lengths."""
    width = int(s.lengths.max())
    if task.options["readout"] == "reference":
        if task.reference_pads_to_max:
            width = task.input.n_tokens
        x = s.x[:, :width].long()
        x = F.pad(x, (0, width - x.shape[1]), value=0)
        return x, None
    return s.x[:, :width].long(), s.lengths


@pytest.mark.parametrize("name", ["listops", "homology"])
@pytest.mark.parametrize("readout", ["last_token", "reference"])
def test_token_batches_read_no_device_values(name, readout, data_dir):
    """On the meta device (which, like an accelerator, has values the host cannot read
    without a sync: here it cannot read them at all) training batches drawn on the host and
    every evaluation batch are built; on CPU they are the batches built before from the
    device's lengths, bit for bit."""
    opts = {**TASKS[name], "readout": readout}
    meta = make_task(name, device="meta", options=opts, data_dir=data_dir)
    cpu = make_task(name, options=opts, data_dir=data_dir)
    meta.train_batch(8, torch.Generator().manual_seed(3))
    got = cpu.train_batch(8, torch.Generator().manual_seed(3))
    train = cpu.splits["train"]
    idx = torch.randint(0, len(train), (8,), generator=torch.Generator().manual_seed(3))
    x, lengths = _old_to_batch(cpu, train.take(idx))
    assert torch.equal(got.x, x) and (got.lengths is None) == (lengths is None)
    for split in cpu.eval_splits:
        shapes = [b.x.shape for b in meta.eval_batches(split, 3)]
        s = cpu.splits[split]
        order = torch.argsort(s.lengths, stable=True)
        for i, b in enumerate(cpu.eval_batches(split, 3)):
            part = s.take(order[3 * i : 3 * i + 3])
            x, lengths = _old_to_batch(cpu, part)
            assert b.x.shape == shapes[i] and torch.equal(b.x, x)
            assert torch.equal(b.y, part.y[:, None])
            assert lengths is None if b.lengths is None else torch.equal(b.lengths, lengths)


def test_cifar_normalisation_constants_are_made_once(tmp_path, monkeypatch):
    import numpy as np

    record_as_fetched(
        tmp_path,
        "cifar10",
        write_cifar10(
            tmp_path / "cifar-10-batches-py",
            np.random.default_rng(0),
            {**{f"data_batch_{i}": 4 for i in range(1, 6)}, "test_batch": 6},
        ),
    )
    g = torch.Generator().manual_seed(0)
    for opts in ({"val_size": 4}, {"val_size": 4, "patch_channels": "gray"}):
        task = make_task("cifar10", options=opts, data_dir=tmp_path)
        first = task.train_batch(4, g)
        next(task.eval_batches("test", 4))

        def no_new_constants(*args, **kwargs):
            raise AssertionError("a constant tensor was made again")

        with monkeypatch.context() as m:
            m.setattr(torch, "tensor", no_new_constants)
            again = task.train_batch(4, g)
            next(task.eval_batches("test", 4))
        assert again.x.shape == first.x.shape
