"""The training loop: Adam, gradient clipping, micro-batches with accumulation, evaluation
on the fixed val/test sets every `eval_every` steps, atomic checkpoints with resume,
SIGTERM/SIGUSR1 handling, divergence detection, and the run's metrics.parquet.

`Loop` is what trains (model, optimizer, data generator, train-loss accumulator, early
stopper, step, wall time, rows) with one `state_dict()` for everything a resume needs;
`Run` is where one run folder's rows, progress file and checkpoints go. `train()` strings
them together: `setup`, `Run.resume`, `run_steps`, `Run.finish`, all under the run folder's
lock (fpt.runlock: one trainer per run folder; a second one waits, then exits EXIT_LOCKED
having touched nothing there). `fpt bench` times the same `Loop` (and `evaluate_batches`), so
the figures it reports are this loop's.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from fpt import checkpoint, features, precision, rng, runlock, tracking
from fpt.early_stop import EarlyStopping
from fpt.metrics import PROGRESS, provenance, read_run, to_table, write_atomic
from fpt.models import FPT, build_for_spec, count_params
from fpt.models.init import check_source
from fpt.spec import RunSpec, applies
from fpt.tasks import TASKS, Batch, Task, make_task

log = logging.getLogger("fpt.train")

# Exit status after a preemption signal: the checkpoint is written, rerun to resume.
# 75 is EX_TEMPFAIL ("try again later"); Snakemake/SLURM treat it as a failed attempt and retry.
EXIT_PREEMPTED = 75
# Exit status when another process trains the same run folder (fpt.runlock): 73, EX_CANTCREAT.
EXIT_LOCKED = runlock.EXIT_LOCKED


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
        # (~800 modules, 4 s per run); eager training needs only the flag itself. Loop sets
        # the public one too when it compiles.
        torch._C._set_deterministic_algorithms(True, warn_only=False)


class Preempted:
    """Set by SIGTERM/SIGUSR1 (SLURM's pre-timeout warning); the loop checkpoints and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        self.signum = signum

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self)


class Accumulator:
    """Train loss and correct answers summed on the device between evaluations: no host
    sync per step."""

    def __init__(self, device: torch.device | str) -> None:
        self.loss = torch.zeros((), device=device, dtype=torch.float64)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.n = 0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        """One micro-batch: its mean `loss` over `n` answers, `correct` of them right."""
        self.loss += loss.detach().double() * n
        self.correct += correct
        self.n += n

    def mean(self) -> tuple[float, float] | None:
        """(mean loss, accuracy) since the last reset, or None when nothing was added."""
        if not self.n:
            return None
        return (self.loss / self.n).item(), (self.correct.double() / self.n).item()

    def reset(self) -> None:
        self.loss.zero_()
        self.correct.zero_()
        self.n = 0

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.cpu(), "correct": self.correct.cpu(), "n": self.n}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.loss.device
        self.loss, self.correct = state["loss"].to(dev), state["correct"].to(dev)
        self.n = state["n"]


@torch.inference_mode()
def evaluate_batches(model, task: Task, batches, autocast) -> tuple[float, float]:
    """Mean loss and accuracy over `batches` (of `task`)."""
    model.eval()
    loss_sum = torch.zeros((), device=task.device, dtype=torch.float64)
    correct = torch.zeros((), device=task.device, dtype=torch.int64)
    n = 0
    for b in batches:
        with autocast():
            logits = model(b.x, b.lengths)
        loss_sum += task.loss(logits, b.y).double() * b.y.numel()
        correct += task.n_correct(logits, b.y)
        n += b.y.numel()
    model.train()
    return (loss_sum / n).item(), (correct.double() / n).item()


def evaluate(model, task: Task, split: str, batch_size: int, autocast) -> tuple[float, float]:
    """Mean loss and accuracy over the whole fixed `split` set."""
    return evaluate_batches(model, task, task.eval_batches(split, batch_size), autocast)


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
    return {c: getattr(spec, c) if applies(c, spec) else None for c in cols}


def train_step(
    model, task: Task, batch, opt, params, micro_batch_size: int, autocast, acc: Accumulator
) -> None:
    """One optimizer step over `batch` in micro-batches (gradient accumulation), clipped at
    1.0. Train loss/correct accumulate into `acc` on the device: no host sync per step."""
    opt.zero_grad(set_to_none=True)
    for mb in batch.split(micro_batch_size):
        with autocast():
            logits = model(mb.x, mb.lengths)
            loss = task.loss(logits, mb.y)
        (loss * (len(mb) / len(batch))).backward()
        acc.add(loss, task.n_correct(logits.detach(), mb.y), mb.y.numel())
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


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
) -> tuple[dict[str, Any], Task, FPT]:
    """Seed, then the task's options, the task and the model, in this order. Frozen weights
    are not checkpointed, so resuming and the attention rule rebuild them by repeating it."""
    seed_everything(spec.seed, dev)
    options = dict(spec.options)
    task = make_task(spec.task, dev, options, data_dir)
    if spec.init == "bit_memory" and init_from is not None:
        check_source(spec, Path(init_from))  # the folder holds the run bit_memory_source derives
    model = build_for_spec(spec, task, weights_dir, init_from=init_from, **model_kwargs)
    return options, task, model.to(dev)


class Loop:
    """One run's training: the model, its optimizer (the model's `configure_optimizers`), the
    training data generator, the train-loss accumulator, the early stopper, the step, the
    wall time and the metrics rows so far. `state_dict()` holds all of it that a resume needs.

    Speed hooks (fpt.features, BENCHMARKS.md): with the cache_features option the loop steps
    `step_model` on the cached features of `task`; `model` stays what is checkpointed and
    restored. `compile`: torch.compile `step_model` (a speed option, not part of the run)."""

    # the checkpoint's keys besides "spec": what `load_state_dict` reads
    STATE_KEYS = ("step", "wall_s", "rows", "model", "optimizer", "rng", "acc", "early_stopping")

    def __init__(
        self, spec: RunSpec, task: Task, model: FPT, device: torch.device, compile: bool = False
    ) -> None:
        self.spec, self.model, self.device = spec, model, device
        self.opt = model.configure_optimizers(spec.lr, device)
        self.params = [p for group in self.opt.param_groups for p in group["params"]]
        self.stopper = EarlyStopping(spec.patience) if spec.patience else None
        if self.stopper is not None and "val" not in task.eval_splits:
            raise ValueError(
                f"early stopping (patience={spec.patience}) needs a val split; task {spec.task} "
                f"evaluates {task.eval_splits}. Use patience 0 for this task."
            )
        self.generator = torch.Generator(device=device).manual_seed(spec.seed)
        self.autocast = precision.configure(spec.precision, device)
        self.task, self.step_model = features.prepare(
            dict(spec.options), task, model, spec.eval_batch_size, self.autocast
        )
        if compile:
            if device.type == "cpu":
                torch.use_deterministic_algorithms(True)  # inductor's own determinism flag too
            self.step_model = torch.compile(self.step_model)
        self.acc = Accumulator(device)
        # fpt.fused: the run's own dropout generator, in place of the global RNG
        self.dropout_rng: torch.Generator | None = None
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self.diverged = False  # a non-finite loss was recorded: the run ends as it stands
        self._wall_prev, self._t0 = 0.0, time.monotonic()

    @property
    def stopped(self) -> bool:
        """Early stopping has ended the run."""
        return self.stopper is not None and self.stopper.stopped

    @property
    def done(self) -> bool:
        return self.step >= self.spec.steps or self.diverged or self.stopped

    def start_clock(self) -> None:
        """Wall time counts on from now (on top of a resumed run's)."""
        self._t0 = time.monotonic()

    def wall(self) -> float:
        return self._wall_prev + time.monotonic() - self._t0

    def advance(self, batch: Batch | None = None) -> None:
        """One training step, on `batch` or else on the next batch the run's generator draws."""
        if batch is None:
            batch = self.task.train_batch(self.spec.batch_size, self.generator)
        train_step(
            self.step_model,
            self.task,
            batch,
            self.opt,
            self.params,
            self.spec.micro_batch_size,
            self.autocast,
            self.acc,
        )
        self.step += 1

    def use_own_dropout_rng(self) -> torch.Generator:
        """Draw this run's dropout masks from a generator of its own (fpt.fused, where runs
        share the global RNG), starting where the global RNG stands now, as the lone run's
        would: on CPU the same masks. The checkpoint stores it as the torch RNG state."""
        gen = torch.Generator(device=self.device)
        if self.device.type == "cpu":
            gen.set_state(torch.get_rng_state())
        else:  # CUDA: a stream of the run's own, seeded from its seed
            gen.manual_seed(self.spec.seed)
        self.dropout_rng = gen
        return gen

    def evaluate(self, split: str) -> tuple[float, float]:
        return evaluate(self.step_model, self.task, split, self.spec.eval_batch_size, self.autocast)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "wall_s": self.wall(),
            "rows": self.rows,
            "model": trainable_state(self.model),
            "optimizer": self.opt.state_dict(),
            "rng": rng.state(self.generator, self.device, self.dropout_rng),
            "acc": self.acc.state_dict(),
            "early_stopping": self.stopper.state_dict() if self.stopper is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output. Checked before anything changes: a state for other
        trainable parameters raises ValueError and leaves the loop as it was."""
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if set(state["model"]) != names:
            raise ValueError("it holds other trainable parameters than this model's")
        saved_groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
        if saved_groups != [len(g["params"]) for g in self.opt.param_groups]:
            raise ValueError("its optimizer state is for other parameter groups")
        if (state["early_stopping"] is None) != (self.stopper is None):
            raise ValueError("its early-stopping state does not match the run's patience")
        self.model.load_state_dict(state["model"], strict=False)
        self.opt.load_state_dict(state["optimizer"])
        rng.restore(
            state["rng"],
            self.generator,
            self.device,
            self.spec.seed,
            state["step"],
            self.dropout_rng,
        )
        self.acc.load_state_dict(state["acc"])
        if self.stopper is not None:
            self.stopper.load_state_dict(state["early_stopping"])
        self.step, self._wall_prev, self.rows = state["step"], state["wall_s"], state["rows"]
        # the final checkpoint of a diverged run: nothing left to train
        self.diverged = any(r.get("diverged") for r in self.rows)
        self.start_clock()


# progress.parquet (fpt.metrics.PROGRESS): the live metrics of a run still training, rewritten
# after every evaluation and removed once metrics.parquet is written. Not a declared Snakemake
# output, so it never makes a run look finished. Read it with pandas, or `fpt status`.
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


def run_columns(spec: RunSpec, model: FPT, dev: torch.device) -> dict[str, Any]:
    """The run-level columns of every metrics row: axes, settings, sizes, provenance."""
    counts = count_params(model)
    return {
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


@dataclass
class Run:
    """One run folder: the loop's metrics rows, progress.parquet, checkpoint/ and, at the
    end, metrics.parquet."""

    spec: RunSpec
    out_dir: Path
    loop: Loop
    columns: dict[str, Any]  # run-level columns of every row (run_columns)
    split_facts: dict[str, dict[str, Any]]  # per eval split (eval_split_facts)
    tracker: tracking.Tracker | None = None  # the `tracking:` setting's mirror, if any

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def resume(self) -> None:
        """Continue from the run's newest usable checkpoint, if there is one."""
        state = checkpoint.load_latest(self.ckpt_dir, self.spec.to_json(), Loop.STATE_KEYS)
        if state is None:
            return
        try:
            self.loop.load_state_dict(state)
        except ValueError as exc:
            log.warning("not resuming %s from its checkpoint: %s", self.spec.path, exc)
            return
        log.info("resuming %s from step %d", self.spec.path, self.loop.step)

    def save(self) -> None:
        checkpoint.save(self.ckpt_dir, {"spec": self.spec.to_json(), **self.loop.state_dict()})

    def record(self) -> bool:
        """Evaluate and append rows; False when a loss is non-finite (the run diverged)."""
        loop, spec = self.loop, self.spec
        common = {
            **self.columns,
            "step": loop.step,
            "samples": loop.step * spec.batch_size,
            "wall_s": loop.wall(),
            "diverged": False,  # set on every row at the end if the run diverges
        }
        new = []
        train = loop.acc.mean()
        if train is not None:
            new.append({**common, "split": "train", "loss": train[0], "accuracy": train[1]})
        for split in loop.task.eval_splits:
            loss, accuracy = loop.evaluate(split)
            new.append(
                {**common, "split": split, "loss": loss, "accuracy": accuracy}
                | self.split_facts[split]
            )
        loop.acc.reset()
        loop.rows.extend(new)  # non-finite rows are kept too: they record when the run diverged
        write_progress(self.out_dir, loop.rows, spec.patience)
        if self.tracker is not None:
            self.tracker.log(loop.step, new)
        finite = all(math.isfinite(r["loss"]) for r in new)
        if not finite:
            loop.diverged = True
        elif loop.stopper is not None:
            val = next(r["accuracy"] for r in new if r["split"] == "val")
            loop.stopper.update(loop.step, val, loop.model)
        return finite

    def finish(self) -> Path:
        """The run-level end columns, the final checkpoint and metrics.parquet."""
        loop = self.loop
        if loop.diverged:
            for r in loop.rows:
                r["diverged"] = True
        if loop.stopper is not None:
            loop.stopper.restore(loop.model)  # the final checkpoint holds the best-val weights
        for r in loop.rows:  # run-level columns, known only now
            r["stop_step"] = loop.step
            r["best_step"] = loop.stopper.best_step if loop.stopper is not None else None
            r["patience"] = self.spec.patience
        self.save()  # the final model, for the attention-map rule and for inspection
        metrics = self.out_dir / "metrics.parquet"
        write_atomic(to_table(loop.rows), metrics)
        # metrics.parquet holds the same rows with the end columns: the live copy goes, so that
        # nothing reading the run folders (`fpt status`, a glob) counts the run twice.
        (self.out_dir / PROGRESS).unlink(missing_ok=True)
        if self.tracker is not None:
            self.tracker.close()
        return metrics


def setup(
    spec: RunSpec,
    out_dir: Path,
    device: str = "auto",
    weights_dir: Path | None = None,
    data_dir: Path | None = None,
    threads: int | None = None,
    init_from: Path | None = None,
    compile: bool = False,
) -> Run:
    """The run folder (with spec.json), the task, the model and its loop, from scratch."""
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
    _, task, model = build_run(spec, dev, weights_dir, data_dir, init_from)
    loop = Loop(spec, task, model, dev, compile=compile)
    facts = {s: eval_split_facts(loop.task, s, spec.eval_batch_size) for s in loop.task.eval_splits}
    tracker = tracking.open_tracker(spec, out_dir)
    return Run(spec, out_dir, loop, run_columns(spec, model, dev), facts, tracker)


def log_evaluation(run: Run, bar: tqdm, show: bool) -> None:
    loop = run.loop
    last = {r["split"]: r["accuracy"] for r in loop.rows[-len(loop.task.eval_splits) - 1 :]}
    bar.set_postfix({k: f"{v:.3f}" for k, v in last.items()})
    if not show:
        log.info(
            "step %d/%d %s",
            loop.step,
            run.spec.steps,
            " ".join(f"{k}={v:.4f}" for k, v in last.items()),
        )
    if loop.stopped:
        log.info(
            "early stop at step %d: no better val accuracy in %d evaluations; "
            "restoring step %s (val %.4f)",
            loop.step,
            run.spec.patience,
            loop.stopper.best_step,
            loop.stopper.best_accuracy,
        )


def after_step(run: Run, bar: tqdm, show: bool) -> None:
    """A run's bookkeeping after each training step (here and in fpt.fused's packs):
    evaluate every `eval_every` steps and at the end, checkpoint every `ckpt_every` steps. A
    non-finite loss or early stopping ends the run (Loop.done) with no checkpoint here."""
    loop, spec = run.loop, run.spec
    if loop.step % spec.eval_every == 0 or loop.step == spec.steps:
        if not run.record():
            log.warning(
                "%s diverged (non-finite loss) by step %d; ending the run as a result",
                spec.path,
                loop.step,
            )
            return
        log_evaluation(run, bar, show)
        if loop.stopped:
            return
    if loop.step % spec.ckpt_every == 0 and loop.step < spec.steps:
        run.save()


def run_steps(run: Run, preempted: Preempted, show: bool) -> None:
    """Train until the last step, early stopping or divergence: evaluate every `eval_every`
    steps and at the end, checkpoint every `ckpt_every` steps, and on a preemption signal
    checkpoint and exit with EXIT_PREEMPTED."""
    loop, spec = run.loop, run.spec
    loop.model.train()
    if loop.step == 0 and not loop.rows:
        run.record()
    bar = tqdm(
        total=spec.steps, initial=loop.step, disable=not show, desc=spec.task, dynamic_ncols=True
    )
    # (a resumed early-stopped or diverged run has nothing left to train)
    while not loop.done:
        loop.advance()
        bar.update(1)
        after_step(run, bar, show)
        if loop.diverged or loop.stopped:
            break
        if preempted.signum is not None:
            run.save()
            bar.close()
            log.warning(
                "received signal %d at step %d: checkpoint written, exiting %d",
                preempted.signum,
                loop.step,
                EXIT_PREEMPTED,
            )
            raise SystemExit(EXIT_PREEMPTED)
    bar.close()


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
    lock_wait: float | None = None,
) -> Path:
    """Train one run into `out_dir` (resuming from its checkpoint) and return metrics.parquet.
    `init_from`: for init=bit_memory, the finished Bit Memory run folder whose backbone this
    run loads (fpt.grid.bit_memory_source names it; the workflow passes it). `compile`:
    torch.compile the model (a speed option, not part of the run; see BENCHMARKS.md).

    The run folder's lock (fpt.runlock) is taken first and held to the end: if another process
    holds it, this waits up to `lock_wait` seconds (None: runlock.default_wait(), i.e.
    $FPT_LOCK_WAIT or 30 s), then raises runlock.RunLocked with nothing
    in the folder read or written. If the other process finished the run meanwhile, its
    metrics.parquet is returned as it is."""
    out_dir = Path(out_dir)
    if lock_wait is None:
        lock_wait = runlock.default_wait()

    def waiting(holder) -> None:
        log.info(
            "%s is locked by %s; waiting up to %g s for it",
            out_dir,
            runlock.describe(holder),
            lock_wait,
        )

    with runlock.acquire(out_dir, lock_wait, on_wait=waiting) as lock:
        if lock.waited:
            log.info("took the lock of %s after waiting", out_dir)
            done = finished_metrics(spec, out_dir)
            if done is not None:
                log.info("%s was finished by the previous holder: not training it again", out_dir)
                return done
        run = setup(spec, out_dir, device, weights_dir, data_dir, threads, init_from, compile)
        run.resume()
        preempted = Preempted()
        if handle_signals:
            preempted.install()
        run.loop.start_clock()
        run_steps(run, preempted, sys.stderr.isatty() if progress is None else progress)
        return run.finish()


def finished_metrics(spec: RunSpec, out_dir: Path) -> Path | None:
    """`out_dir`/metrics.parquet if it holds the finished run of `spec` (every row of this
    run path and settings, with the end columns), else None."""
    metrics = out_dir / "metrics.parquet"
    if not metrics.exists():
        return None
    try:
        df = read_run(metrics)
    except Exception as exc:  # unreadable or another schema: train (and rewrite) it
        log.warning("%s is not a finished run's metrics (%s); training", metrics, exc)
        return None
    ok = (
        len(df) > 0
        and (df["run"] == spec.path).all()
        and (df["settings"] == spec.settings_hash()).all()
        and df["stop_step"].notna().all()
    )
    return metrics if ok else None
