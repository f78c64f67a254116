"""The training loop: Adam, gradient clipping, micro-batches with accumulation, evaluation
on the fixed val/test sets every `eval_every` steps, atomic checkpoints with resume,
SIGTERM/SIGUSR1 handling, divergence detection, and the run's metrics.parquet."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fpt import checkpoint, features, precision
from fpt.early_stop import EarlyStopping
from fpt.metrics import provenance, to_table, write_atomic
from fpt.models import build_for_spec, count_params
from fpt.models.init import check_source
from fpt.spec import LATER_SETTINGS, RunSpec
from fpt.status import PROGRESS  # progress.parquet, see write_progress
from fpt.tasks import TASKS, Task, make_task

log = logging.getLogger("fpt.train")

# Exit status after a preemption signal: the checkpoint is written, rerun to resume.
# 75 is EX_TEMPFAIL ("try again later"); Snakemake/SLURM treat it as a failed attempt and retry.
EXIT_PREEMPTED = 75


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "--device cuda was asked for but torch sees no CUDA device; use --device cpu or auto"
        )
    return torch.device(device)


def seed_everything(seed: int, device: torch.device) -> None:
    torch.manual_seed(seed)
    if device.type == "cpu":
        # Bitwise-repeatable runs on CPU (resume == uninterrupted is tested on this). The
        # public torch.use_deterministic_algorithms also imports torch._inductor's config
        # (~800 modules, 4 s per run); eager training needs only the flag itself. train()
        # sets the public one too when it compiles.
        torch._C._set_deterministic_algorithms(True, warn_only=False)


class _Preempted:
    """Set by SIGTERM/SIGUSR1 (SLURM's pre-timeout warning); the loop checkpoints and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        self.signum = signum

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self)


@torch.inference_mode()
def evaluate(model, task: Task, split: str, batch_size: int, autocast) -> tuple[float, float]:
    """Mean loss and accuracy over the whole fixed `split` set."""
    model.eval()
    loss_sum = torch.zeros((), device=task.device, dtype=torch.float64)
    correct = torch.zeros((), device=task.device, dtype=torch.int64)
    n = 0
    for b in task.eval_batches(split, batch_size):
        with autocast():
            logits = model(b.x, b.lengths)
        loss_sum += task.loss(logits, b.y).double() * b.y.numel()
        correct += task.n_correct(logits, b.y)
        n += b.y.numel()
    model.train()
    return (loss_sum / n).item(), (correct.double() / n).item()


def eval_split_facts(task: Task, split: str, batch_size: int) -> dict[str, Any]:
    """What a table needs to judge an accuracy on `split`: its size in examples (binomial
    noise) and `chance`, the accuracy of always predicting the split's most frequent label
    (what a collapsed model scores)."""
    counts: torch.Tensor | None = None
    examples = 0
    for b in task.eval_batches(split, batch_size):
        c = torch.bincount(b.y.reshape(-1).long(), minlength=task.head.n_classes)
        counts = c if counts is None else counts + c
        examples += len(b)
    chance = (counts.max() / counts.sum()).item() if counts is not None else None
    return {"eval_examples": examples, "chance": chance}


def run_setting_columns(spec: RunSpec) -> dict[str, Any]:
    """The fidelity settings of a run as metrics columns; null where one does not apply
    (random_init for a pretrained backbone, lstm_cell for a transformer)."""
    cols = ("precision", "random_init", "backbone_dropout", "lstm_cell")
    return {c: getattr(spec, c) if LATER_SETTINGS[c].applies(spec) else None for c in cols}


def train_step(
    model, task: Task, batch, opt, params, micro_batch_size: int, autocast, acc: dict[str, Any]
) -> None:
    """One optimizer step over `batch` in micro-batches (gradient accumulation), clipped at
    1.0. Train loss/correct accumulate into `acc` on the device: no host sync per step."""
    opt.zero_grad(set_to_none=True)
    for mb in batch.split(micro_batch_size):
        with autocast():
            logits = model(mb.x, mb.lengths)
            loss = task.loss(logits, mb.y)
        (loss * (len(mb) / len(batch))).backward()
        acc["loss"] += loss.detach().double() * mb.y.numel()
        acc["correct"] += task.n_correct(logits.detach(), mb.y)
        acc["n"] += mb.y.numel()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Only trainable tensors are checkpointed; frozen ones are rebuilt from weights + seed."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names}


def build_run(
    spec: RunSpec,
    dev: torch.device,
    weights_dir: Path | None = None,
    data_dir: Path | None = None,
    init_from: Path | None = None,
    **model_kwargs: Any,
) -> tuple[dict[str, Any], Task, torch.nn.Module]:
    """Seed, then the task's options, the task and the model, in this order. Frozen weights
    are not checkpointed, so resuming and the attention rule rebuild them by repeating it."""
    seed_everything(spec.seed, dev)
    options = dict(spec.options)
    task = make_task(spec.task, dev, options, data_dir)
    if spec.init == "bit_memory" and init_from is not None:
        check_source(spec, Path(init_from))  # the folder holds the run bit_memory_source derives
    model = build_for_spec(spec, task, weights_dir, init_from=init_from, **model_kwargs)
    return options, task, model.to(dev)


# progress.parquet: the live metrics of a run still training, rewritten after every evaluation
# and removed once metrics.parquet is written. Not a declared Snakemake output, so it never
# makes a run look finished. Read it with pandas, or `fpt status`.
def write_progress(out_dir: Path, rows: list[dict[str, Any]], patience: int) -> None:
    """The run's rows so far to `out_dir`/progress.parquet, atomically, in metrics.parquet's
    schema; the run-level columns known only at the end (stop_step, best_step) are null and
    `diverged` is False until then. Cost: one small Parquet write per evaluation (measured on
    CPU: ~5 ms for the first evaluations, ~20 ms for 1,000 evaluations' 3,000 rows), beside
    an evaluation that runs the whole val/test sets: noise. A failed write (disk full) warns
    and training goes on: the file is for watching; the checkpoint and metrics.parquet are
    the record."""
    try:
        write_atomic(to_table([{**r, "patience": patience} for r in rows]), out_dir / PROGRESS)
    except OSError as exc:
        log.warning("could not write %s: %s", out_dir / PROGRESS, exc)


def train(
    spec: RunSpec,
    out_dir: str | Path,
    device: str = "auto",
    weights_dir: Path | None = None,
    data_dir: Path | None = None,
    threads: int | None = None,
    progress: bool | None = None,
    handle_signals: bool = True,
    init_from: Path | None = None,
    compile: bool = False,
) -> Path:
    """Train one run into `out_dir` (resuming from its checkpoint) and return metrics.parquet.
    `init_from`: for init=bit_memory, the finished Bit Memory run folder whose backbone this
    run loads (fpt.grid.bit_memory_source names it; the workflow passes it). `compile`:
    torch.compile the model (a speed option, not part of the run; see BENCHMARKS.md)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "spec.json").write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True) + "\n")
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    reserved = TASKS[spec.task].reserved_seeds(spec.options)
    if spec.seed in reserved:
        raise ValueError(
            f"seed {spec.seed} would train {spec.task} on its own val/test examples (drawn with "
            f"seeds {sorted(reserved)}); use another seed or data_seed"
        )
    options, task, model = build_run(spec, dev, weights_dir, data_dir, init_from)
    params = [
        p for p in model.parameters() if p.requires_grad
    ]  # no optimizer state for frozen weights
    opt = torch.optim.Adam(params, lr=spec.lr, **({"fused": True} if dev.type == "cuda" else {}))
    counts = count_params(model)
    stopper = EarlyStopping(spec.patience) if spec.patience else None
    if stopper is not None and "val" not in task.eval_splits:
        raise ValueError(
            f"early stopping (patience={spec.patience}) needs a val split; task {spec.task} "
            f"evaluates {task.eval_splits}. Use patience 0 for this task."
        )
    generator = torch.Generator(device=dev).manual_seed(spec.seed)

    autocast = precision.configure(spec.precision, dev)
    # Speed hooks (fpt.features, BENCHMARKS.md): with the cache_features option the loop steps
    # `step_model` on cached features; `model` stays what is checkpointed and restored.
    task, step_model = features.prepare(options, task, model, spec.eval_batch_size, autocast)
    if compile:
        if dev.type == "cpu":
            torch.use_deterministic_algorithms(True)  # inductor's own determinism flag too
        step_model = torch.compile(step_model)

    run_cols = {
        **spec.axis_values(),
        "lr": spec.lr,
        "seed": spec.seed,
        "settings": spec.settings_hash(),
        "run": spec.path,
        "trainable_params": counts["all"]["trainable"],
        "reachable_params": counts["all"].get("reachable"),
        "total_params": counts["all"]["total"],
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        **run_setting_columns(spec),
        **provenance(str(dev), precision.device_name(dev)),
    }
    split_facts = {s: eval_split_facts(task, s, spec.eval_batch_size) for s in task.eval_splits}

    ckpt_dir = out_dir / "checkpoint"
    spec_json = spec.to_json()
    state = checkpoint.load_latest(ckpt_dir, spec_json)
    rows: list[dict[str, Any]] = []
    step, wall_prev = 0, 0.0
    acc = {
        "loss": torch.zeros((), device=dev, dtype=torch.float64),
        "correct": torch.zeros((), device=dev, dtype=torch.int64),
        "n": 0,
    }
    if state is not None:
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], generator)
        if stopper is not None:
            stopper.load_state_dict(state["early_stopping"])
        step, wall_prev, rows = state["step"], state["wall_s"], state["rows"]
        acc = {
            "loss": state["acc"]["loss"].to(dev),
            "correct": state["acc"]["correct"].to(dev),
            "n": state["acc"]["n"],
        }
        log.info("resuming %s from step %d", spec.path, step)

    preempted = _Preempted()
    if handle_signals:
        preempted.install()
    t0 = time.monotonic()

    def wall() -> float:
        return wall_prev + time.monotonic() - t0

    def save_ckpt() -> None:
        checkpoint.save(
            ckpt_dir,
            {
                "spec": spec_json,
                "step": step,
                "wall_s": wall(),
                "rows": rows,
                "model": trainable_state(model),
                "optimizer": opt.state_dict(),
                "rng": _rng_state(generator),
                "acc": {"loss": acc["loss"].cpu(), "correct": acc["correct"].cpu(), "n": acc["n"]},
                "early_stopping": stopper.state_dict() if stopper is not None else None,
            },
        )

    def record() -> bool:
        """Evaluate and append rows; False when a loss is non-finite (the run diverged)."""
        common = {
            **run_cols,
            "step": step,
            "samples": step * spec.batch_size,
            "wall_s": wall(),
            "diverged": False,  # set on every row at the end if the run diverges
        }
        new = []
        if acc["n"]:
            tl = (acc["loss"] / acc["n"]).item()
            new.append(
                {
                    **common,
                    "split": "train",
                    "loss": tl,
                    "accuracy": (acc["correct"].double() / acc["n"]).item(),
                }
            )
        for split in task.eval_splits:
            loss, accuracy = evaluate(step_model, task, split, spec.eval_batch_size, autocast)
            new.append(
                {**common, "split": split, "loss": loss, "accuracy": accuracy} | split_facts[split]
            )
        acc["loss"].zero_(), acc["correct"].zero_()
        acc["n"] = 0
        rows.extend(new)  # non-finite rows are kept too: they record when the run diverged
        write_progress(out_dir, rows, spec.patience)
        finite = all(math.isfinite(r["loss"]) for r in new)
        if finite and stopper is not None:
            val = next(r["accuracy"] for r in new if r["split"] == "val")
            stopper.update(step, val, trainable_state(model))
        return finite

    model.train()
    diverged = False
    if step == 0 and not rows:
        diverged = not record()
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=spec.steps, initial=step, disable=not show, desc=spec.task, dynamic_ncols=True)
    # (a resumed early-stopped run has nothing left to train)
    while step < spec.steps and not diverged and not (stopper is not None and stopper.stopped):
        train_step(
            step_model,
            task,
            task.train_batch(spec.batch_size, generator),
            opt,
            params,
            spec.micro_batch_size,
            autocast,
            acc,
        )
        step += 1
        bar.update(1)
        if step % spec.eval_every == 0 or step == spec.steps:
            if not record():
                diverged = True
                log.warning(
                    "%s diverged (non-finite loss) by step %d; ending the run as a result",
                    spec.path,
                    step,
                )
                break
            last = {r["split"]: r["accuracy"] for r in rows[-len(task.eval_splits) - 1 :]}
            bar.set_postfix({k: f"{v:.3f}" for k, v in last.items()})
            if not show:
                log.info(
                    "step %d/%d %s",
                    step,
                    spec.steps,
                    " ".join(f"{k}={v:.4f}" for k, v in last.items()),
                )
            if stopper is not None and stopper.stopped:
                log.info(
                    "early stop at step %d: no better val accuracy in %d evaluations; "
                    "restoring step %s (val %.4f)",
                    step,
                    spec.patience,
                    stopper.best_step,
                    stopper.best_accuracy,
                )
                break
        if step % spec.ckpt_every == 0 and step < spec.steps:
            save_ckpt()
        if preempted.signum is not None:
            save_ckpt()
            bar.close()
            log.warning(
                "received signal %d at step %d: checkpoint written, exiting %d",
                preempted.signum,
                step,
                EXIT_PREEMPTED,
            )
            raise SystemExit(EXIT_PREEMPTED)
    bar.close()
    if diverged:
        for r in rows:
            r["diverged"] = True
    if stopper is not None:
        stopper.restore(model)  # the final checkpoint holds the best-val weights
    for r in rows:  # run-level columns, known only now
        r["stop_step"] = step
        r["best_step"] = stopper.best_step if stopper is not None else None
        r["patience"] = spec.patience
    save_ckpt()  # the final model, for the attention-map rule and for inspection
    metrics = out_dir / "metrics.parquet"
    write_atomic(to_table(rows), metrics)
    # metrics.parquet holds the same rows with the end columns: the live copy goes, so that
    # nothing reading the run folders (`fpt status`, a glob) counts the run twice.
    (out_dir / PROGRESS).unlink(missing_ok=True)
    return metrics
