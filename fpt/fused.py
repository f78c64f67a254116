"""Fused runs: several runs of one backbone trained in one process, step by step, as if each
ran alone.

Runs that differ only in seed and/or learning rate have identical shapes. A pack stacks them
along a run dimension: `torch.func.vmap` over `functional_call` of one template model, with
each run's trainable tensors stacked (in_dims 0) and the frozen tensors that are equal in
every run passed once (in_dims None: a pretrained backbone's weights are held once, and the
frozen matmuls become one larger matmul over all the runs' tokens). Frozen tensors that
differ (random backbones of different seeds) are stacked too.

Everything else stays per run, in the lone run's own objects (`fpt.train.Run` / `Loop`):
its data generator and batches, its Adam (the model's `configure_optimizers`), its gradient
clipping at 1.0, its train-loss accumulator, evaluation, early stopping, checkpoint and
metrics file, in its own run folder. The pack's loss is the sum of the runs' losses, so each
run's parameters get exactly its own gradient.

Dropout is per run too: every dropout mask (the input dropout, the backbone's, and attention
dropout, for which the pack runs the eager attention path) is drawn from the run's own
generator, which starts from the state the lone run's global RNG would have and is what the
run's checkpoint stores as its torch RNG state. On CPU the masks are the lone run's masks bit
for bit (`torch.dropout` draws `bernoulli_(1 - p)` on a tensor of the input's shape), so a
fused run matches its lone twin within float tolerance (tests/test_fused.py,
tests/test_fused_families.py) and a pack's checkpoint resumes as a lone run and vice versa.
(On CUDA a lone run's dropout uses the fused native kernel, a different draw: a fused CUDA
run is the same distribution, not the same masks.)

Only public torch and transformers APIs are called, but the pack leans on behaviours that
an upgrade could change without an error, each pinned by tests/test_fused_families.py (with
every packing family on a padded token task and an image task, fused == lone):
- torch's dropout draws `bernoulli_(1 - p)` on a tensor of the input's shape and divides by
  1 - p (the per-run masks equal the lone run's), and every dropout of the models goes
  through `torch.nn.functional.dropout`, which the pack swaps for its per-run one;
- transformers' eager attention path (`PreTrainedModel.set_attn_implementation("eager")`,
  on the pack's own copy of the model) and its eager mask function, found in
  `masking_utils.ALL_MASK_ATTENTION_FUNCTIONS["eager"]` and called with
  `allow_is_bidirectional_skip=False` for the stacked forward;
- Longformer's layers as fpt.models.backbones.LongformerBackbone drives them.
`VERIFIED_WITH` names the versions this was checked with; a pack on others logs a warning.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from tqdm import tqdm

from fpt import runlock
from fpt.packs import why_not_packable
from fpt.spec import RunSpec
from fpt.tasks import Batch
from fpt.train import (
    EXIT_PREEMPTED,
    Loop,
    Preempted,
    Run,
    after_step,
    finished_metrics,
    setup,
)

log = logging.getLogger("fpt.fused")

# The torch and transformers versions (major.minor) the behaviours above were checked with.
VERIFIED_WITH = {"torch": ("2.13",), "transformers": ("5.25",)}


def unverified_versions() -> list[str]:
    """The installed torch / transformers versions that VERIFIED_WITH does not name."""
    import transformers

    have = {"torch": torch.__version__, "transformers": transformers.__version__}
    return [
        f"{name} {v}"
        for name, v in have.items()
        if ".".join(str(v).split(".")[:2]) not in VERIFIED_WITH[name]
    ]


class Pack:
    """The loops of one pack's runs and the stacked forward over their models. Each loop
    draws its dropout from a generator of its own (`Loop.use_own_dropout_rng`)."""

    def __init__(self, loops: list[Loop]) -> None:
        if any(loop.dropout_rng is None for loop in loops):
            raise ValueError("each loop of a pack needs its own dropout generator")
        unverified = unverified_versions()
        if unverified:
            log.warning(
                "fused packs were checked with %s, not %s: run tests/test_fused_families.py "
                "before trusting a pack's runs to equal the lone runs",
                ", ".join(f"{k} {'/'.join(v)}" for k, v in VERIFIED_WITH.items()),
                ", ".join(unverified),
            )
        self.loops = loops
        self.gens = [loop.dropout_rng for loop in loops]
        models = [loop.model for loop in loops]
        # each run's parameters by name, looked up once: the stacked forward reads them every
        # micro-batch (the tensors are the loops' own, which their optimizers update)
        self.named = named = [dict(m.named_parameters()) for m in models]
        self.trainable = [n for n, p in named[0].items() if p.requires_grad]
        self.shared: dict[str, torch.Tensor] = {}
        self.stacked_frozen: dict[str, torch.Tensor] = {}
        for name, p0 in named[0].items():
            if p0.requires_grad:
                continue
            if all(torch.equal(p0, n[name]) for n in named[1:]):
                for n in named[1:]:  # held once: every run's model points at run 0's tensor
                    n[name].data = p0.data
                self.shared[name] = p0.detach()
            else:
                self.stacked_frozen[name] = torch.stack([n[name].detach() for n in named])
        self.buffers = dict(models[0].named_buffers())
        self.template = eager_template(models[0])
        # set flag by flag, not with train(): transformers' train() also switches hub kernels,
        # which cannot load onto the copy's meta tensors
        self.modes = list(zip(self.template.modules(), models[0].modules(), strict=True))

    def forward(self, active: list[int], x: torch.Tensor, lengths: torch.Tensor | None):
        """Logits of runs `active` (indices into the pack) on their stacked inputs."""
        stacked = {n: torch.stack([self.named[i][n] for i in active]) for n in self.trainable}
        frozen = {n: t[active] for n, t in self.stacked_frozen.items()}
        # which run each vmapped call is (a batched 0-dim tensor): picks its dropout masks
        run: dict[str, torch.Tensor] = {}

        def one(params, frozen_params, index, xb, lb):
            run["index"] = index
            args = (xb,) if lb is None else (xb, lb)
            return functional_call(
                self.template, ({**params, **frozen_params, **self.shared}, self.buffers), args
            )

        index = torch.arange(len(active), device=x.device)
        in_dims = (0, 0, 0, 0, None if lengths is None else 0)
        gens = [self.gens[i] for i in active]
        for copied, own in self.modes:  # each module's train/eval flag, as in run 0's model
            copied.training = own.training
        with _masks_always_built(), _per_run_dropout(gens, run):
            return vmap(one, in_dims=in_dims, randomness="same")(stacked, frozen, index, x, lengths)


def eager_template(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model`'s modules with no storage (meta tensors; the pack's functional_call
    passes every tensor in), on transformers' eager attention path: its dropout is an
    F.dropout call (drawn per run below), and SDPA's CPU kernel has no vmap batching rule.
    Same arithmetic as SDPA within float tolerance, same dropout draws
    (tests/test_fused_families.py). A copy, so the runs' own models keep SDPA for their
    evaluations, and nothing is switched back and forth."""
    from transformers import PreTrainedModel

    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = torch.nn.Parameter(
            torch.empty_like(p, device="meta"), requires_grad=p.requires_grad
        )
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    template = copy.deepcopy(model, memo)
    for mod in template.modules():
        if isinstance(mod, PreTrainedModel):
            mod.set_attn_implementation("eager")
    return template


@contextlib.contextmanager
def _masks_always_built() -> Iterator[None]:
    """transformers' eager padding mask, always built: its shortcut that drops a mask
    without padding asks the (batched) mask `.all()`, control flow that vmap cannot trace.
    Registered in the mask interface (its documented way to override a mask function) for
    the stacked forward only."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    eager_mask = ALL_MASK_ATTENTION_FUNCTIONS["eager"]

    def always_built(*args, **kwargs):
        return eager_mask(*args, **{**kwargs, "allow_is_bidirectional_skip": False})

    AttentionMaskInterface.register("eager", always_built)
    try:
        yield
    finally:
        AttentionMaskInterface.register("eager", eager_mask)


@contextlib.contextmanager
def _per_run_dropout(gens: list[torch.Generator], run: dict[str, torch.Tensor]) -> Iterator[None]:
    """F.dropout under the pack's vmap draws each run's mask from that run's generator, as
    `torch.dropout` would from the lone run's global RNG: bernoulli_(1 - p) on a tensor of
    the (per-run) input's shape, divided by 1 - p. The runs' masks are drawn as rows of one
    tensor; indexing it with the run's index (`run["index"]`, batched under vmap) gives each
    vmapped call its own row."""
    original = F.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0.0:
            return original(input, p, training, inplace)
        noise = torch.empty((len(gens), *input.shape), dtype=input.dtype, device=input.device)
        for row, g in zip(noise, gens, strict=True):
            row.bernoulli_(1 - p, generator=g)
        return input * noise.div_(1 - p)[run["index"]]

    F.dropout = dropout
    try:
        yield
    finally:
        F.dropout = original


def fused_step(pack: Pack, active: list[int], batches: list[Batch]) -> None:
    """One optimizer step of each active run on its own batch, with one stacked forward and
    backward per micro-batch; per run: zero_grad, clipping at 1.0, Adam step, accumulator.
    The same step as fpt.train.train_step for each run."""
    loops = [pack.loops[i] for i in active]
    for loop in loops:
        loop.opt.zero_grad(set_to_none=True)
    micro = loops[0].spec.micro_batch_size
    splits = [b.split(micro) for b in batches]
    for mbs in zip(*splits, strict=True):
        x = torch.stack([mb.x for mb in mbs])
        lengths = None if mbs[0].lengths is None else torch.stack([mb.lengths for mb in mbs])
        with loops[0].autocast():
            logits = pack.forward(active, x, lengths)
            losses = [
                loop.task.loss(logits[k], mb.y)
                for k, (loop, mb) in enumerate(zip(loops, mbs, strict=True))
            ]
        total = sum(
            loss * (len(mb) / len(b)) for loss, mb, b in zip(losses, mbs, batches, strict=True)
        )
        total.backward()
        for k, (loop, mb) in enumerate(zip(loops, mbs, strict=True)):
            loop.acc.add(losses[k], loop.task.n_correct(logits[k].detach(), mb.y), mb.y.numel())
    for loop in loops:
        torch.nn.utils.clip_grad_norm_(loop.params, 1.0)
        loop.opt.step()
        loop.step += 1


def run_pack_steps(runs: list[Run], preempted: Preempted, show: bool) -> None:
    """Train every run of a pack to its end. Each step advances the unfinished runs that
    are furthest behind together (after a resume they can stand at different steps)."""
    pack = Pack([run.loop for run in runs])
    for run in runs:
        run.loop.model.train()
        if run.loop.step == 0 and not run.loop.rows:
            run.record()
    total = sum(r.spec.steps for r in runs)
    bar = tqdm(
        total=total,
        initial=sum(r.loop.step for r in runs),
        disable=not show,
        desc=f"pack of {len(runs)}",
        dynamic_ncols=True,
    )
    while True:
        pending = [i for i, r in enumerate(runs) if not r.loop.done]
        if not pending:
            break
        low = min(runs[i].loop.step for i in pending)
        active = [i for i in pending if runs[i].loop.step == low]
        batches = [
            runs[i].loop.task.train_batch(runs[i].spec.batch_size, runs[i].loop.generator)
            for i in active
        ]
        # Batches cut to their longest example (readout last_token) can differ in length:
        # those fuse with runs of the same shape only (padding further would change their
        # dropout draws).
        groups: dict[tuple, list[int]] = {}
        for k, b in enumerate(batches):
            groups.setdefault(tuple(b.x.shape), []).append(k)
        for ks in groups.values():
            fused_step(pack, [active[k] for k in ks], [batches[k] for k in ks])
        bar.update(len(active))
        for i in active:
            after_step(runs[i], bar, show)
        if preempted.signum is not None:
            for run in runs:
                if not run.loop.done:
                    run.save()
            bar.close()
            log.warning(
                "received signal %d: every run's checkpoint written, exiting %d",
                preempted.signum,
                EXIT_PREEMPTED,
            )
            raise SystemExit(EXIT_PREEMPTED)
    bar.close()


def train_pack(
    specs: list[RunSpec],
    out_dirs: list[Path],
    device: str = "auto",
    weights_dir: Path | None = None,
    data_dir: Path | None = None,
    threads: int | None = None,
    progress: bool | None = None,
    handle_signals: bool = True,
    lock_wait: float | None = None,
) -> list[Path]:
    """Train the runs `specs` (into `out_dirs`, one folder each) as one fused pack and return
    their metrics.parquet files. Each run resumes from its own checkpoint; a run already
    finished is left as it is. Every run folder's lock (fpt.runlock) is held to the end."""
    reason = why_not_packable(specs)
    if reason is not None:
        raise ValueError(f"these runs cannot train as one pack: {reason}")
    if len(out_dirs) != len(specs):
        raise ValueError("one run folder per run")
    if lock_wait is None:
        lock_wait = runlock.default_wait()
    show = sys.stderr.isatty() if progress is None else progress
    with contextlib.ExitStack() as locks:
        order = sorted(range(len(specs)), key=lambda i: str(out_dirs[i]))  # no lock-order cycles
        for i in order:
            locks.enter_context(runlock.acquire(Path(out_dirs[i]), lock_wait))
        results: dict[int, Path] = {}
        runs = []
        for i, (spec, out) in enumerate(zip(specs, out_dirs, strict=True)):
            done = finished_metrics(spec, Path(out))
            if done is not None:
                results[i] = done
                continue
            run = setup(spec, Path(out), device, weights_dir, data_dir, threads)
            # the lone run's global RNG from here on (its dropout draws); a resumed run's
            # checkpoint restores it
            run.loop.use_own_dropout_rng()
            run.resume()
            runs.append((i, run))
        if runs:
            preempted = Preempted()
            if handle_signals:
                preempted.install()
            for _, run in runs:
                run.loop.start_clock()
            run_pack_steps([r for _, r in runs], preempted, show)
            for i, run in runs:
                results[i] = run.finish()
        return [results[i] for i in range(len(specs))]
