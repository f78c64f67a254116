"""What the Snakemake rules' `run:` blocks call (workflow/rules/*.smk), so that each block is
one line and each local job writes a log.

Local jobs run in threads of the Snakemake process (force-use-threads in the profiles), so
the logging and warnings of a job are captured under one lock: `job_log` serialises the
jobs that use it (they are short; the matplotlib work was serialised already, see
fpt.analysis.targets), and its log handler only takes records of its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fpt import files

_LOG_LOCK = threading.RLock()

# Columns of Snakemake's benchmark files (snakemake.benchmark), in its order.
BENCHMARK_COLUMNS = (
    "s",
    "h:m:s",
    "max_rss",
    "max_vms",
    "max_uss",
    "max_pss",
    "io_in",
    "io_out",
    "mean_load",
    "cpu_time",
)


class _ThisThread(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.ident


@contextmanager
def job_log(log: str | Path, what: str) -> Iterator[logging.Logger]:
    """Write `what`'s start, its log records (INFO and up, any logger, this thread), its
    warnings, its traceback if it fails, and its duration to `log` (replaced)."""
    path = Path(log)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_ThisThread())
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("fpt.workflow")
    root = logging.getLogger()
    ident = threading.get_ident()
    with _LOG_LOCK, warnings.catch_warnings():
        # only this thread's warnings go to the log; other threads' are shown as usual
        shown = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            if threading.get_ident() != ident:
                return shown(message, category, filename, lineno, file, line)
            logger.warning("%s:%s: %s: %s", filename, lineno, category.__name__, message)

        warnings.showwarning = showwarning
        warnings.simplefilter("default")
        old_level = root.level
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        start = time.monotonic()
        logger.info("start: %s", what)
        try:
            yield logger
        except BaseException:
            logger.error("failed:\n%s", traceback.format_exc())
            raise
        else:
            logger.info("done in %.2f s", time.monotonic() - start)
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
            handler.close()


def _log_outputs(logger: logging.Logger, paths: Iterable[str | Path]) -> None:
    for p in map(Path, paths):
        size = p.stat().st_size if p.exists() else None
        logger.info("wrote %s (%s bytes)", p, size)


def logged(func: Callable[..., Any], log: str | Path, outputs: Iterable[str], *args: Any) -> None:
    """`func(*args)` under `job_log`, then the outputs' sizes."""
    with job_log(log, f"{func.__module__}.{func.__qualname__}") as logger:
        func(*args)
        _log_outputs(logger, outputs)


def build_target(
    name: str,
    experiments: Sequence[str],
    input: Any,
    output: Mapping[str, str],
    log: str | Path,
    config: Mapping[str, Any],
) -> None:
    """A table or figure of fpt.analysis.targets (rules/analysis.smk)."""
    from fpt.analysis import targets

    with job_log(log, f"target {name}") as logger:
        logger.info("experiments: %s; extra inputs: %d", list(experiments), len(input.extra))
        targets.build(
            name,
            metrics=dict(zip(experiments, input.metrics, strict=True)),
            out={k: Path(v) for k, v in output.items()},
            extra=list(input.extra),
            label=config["label"],
            settings=config["analysis"],
        )
        _log_outputs(logger, [v for _, v in output.items()])


def write_text(text: str, out: str | Path, log: str | Path) -> None:
    """The config snapshot (rule config_snapshot)."""
    with job_log(log, f"write {out}") as logger:
        files.write_text(out, text)
        _log_outputs(logger, [out])


def resource_table(
    benchmarks: Sequence[str | Path],
    runs: Sequence[Mapping[str, Any]],
    out: str | Path,
    log: str | Path,
) -> None:
    """Every train job's Snakemake benchmark (wall seconds `s`, `max_rss` MB, ...) beside
    its run's task, backbone, size, init and trainable: one TSV to size SLURM jobs from
    (rule resource_table). `runs[i]` describes `benchmarks[i]`; with retries, a benchmark
    holds the measurement of the attempt that finished."""
    import pandas as pd

    with job_log(log, "resource table") as logger:
        rows = []
        for path, run in zip(benchmarks, runs, strict=True):
            bench = pd.read_csv(path, sep="\t")
            if bench.empty:
                logger.warning("%s: no measurement", path)
                continue
            last = bench.iloc[-1]  # repeats: the last one
            rows.append({**run, **{c: last[c] for c in bench.columns}})
        cols = [*(runs[0] if runs else {"run": None}), *BENCHMARK_COLUMNS]
        df = pd.DataFrame(rows)
        df = df.reindex(columns=[*cols, *(c for c in df.columns if c not in cols)])
        files.write_with(out, lambda tmp: df.to_csv(tmp, sep="\t", index=False))
        logger.info("%d runs", len(df))
        _log_outputs(logger, [out])


def train_jobs(grid: Any) -> list[str]:
    """The grid's training jobs: each lone run's path, then each fused pack's name."""
    return [*grid.lone_runs(), *grid.packs]


def run_descriptions(grid: Any) -> list[dict[str, Any]]:
    """What resource_table puts beside each training job's measurements, in `train_jobs`
    order: a pack's row names its runs (space-separated) and how many share the job."""
    rows = []
    for job in train_jobs(grid):
        runs = grid.packs.get(job, [job])
        spec = grid.runs[runs[0]]
        rows.append(
            {
                "run": " ".join(runs),
                "task": spec.task,
                "backbone": spec.backbone,
                "size": spec.size,
                "init": spec.init,
                "trainable": spec.trainable,
                "steps": spec.steps,
                "runs_in_job": len(runs),
            }
        )
    return rows


def train_resources(specs: Sequence[Any], config: Mapping[str, Any]) -> dict[str, int]:
    """{"runtime": minutes, "mem_mb": MB} of ONE training job that trains `specs` (RunSpecs:
    one for a lone run; several of one backbone for a fused pack: frozen weights held once,
    activations and trainable state per run), for the train rules' `resources:` (a function
    there, never a param). `train_runtime_min` / `train_mem_mb`: "auto" = fpt.plan's
    estimate x the config's `estimate` safety factors, a number = that number. Attempt 1's:
    the rule multiplies the runtime by the attempt. Cached per job (fpt.plan.job_resources)
    and per model shape, so a DAG of ~1,000 runs builds each distinct model once."""
    from fpt import plan

    return plan.job_resources(list(specs), config)


def write_plan(config: Mapping[str, Any], tsv: str | Path, md: str | Path, log: str | Path) -> None:
    """The grid's cost before it starts (rule plan): `fpt plan`'s table as TSV and Markdown,
    in the log and on stdout."""
    from fpt import plan

    with job_log(log, "plan") as logger:
        p = plan.plan(config, plan.Hardware.from_config(config), source="config")
        text = plan.render_text(p, markdown=True)
        files.write_text(tsv, plan.render_tsv(p))
        files.write_text(md, text)
        table = plan.render_text(p)
        logger.info("\n%s", table)
        print(table, end="", flush=True)
        _log_outputs(logger, [tsv, md])


# ---- GPUs on the machine Snakemake runs on ---------------------------------------------------


def local_gpus(config: Mapping[str, Any], local: bool) -> list[str] | None:
    """The GPUs this machine's training jobs lease (fpt.gpu_lease: the config's `gpus`, or
    those SLURM gave the allocation Snakemake runs in; each gives `runs_per_gpu` slots); [] on
    a machine without GPUs or with device cpu; None where the jobs run elsewhere (a cluster
    executor: the jobs' own GPUs come from the cluster). Counting initialises no CUDA."""
    if not local:
        return None
    if config["device"] == "cpu":
        return []
    from fpt import gpu_lease

    return gpu_lease.visible_gpus()


def train_job_gpus(config: Mapping[str, Any], gpus: list[str] | None) -> int:
    """A training job's `gpu` resource: 1 where it leases (or, on a cluster, asks for) one."""
    if config["device"] == "cpu":
        return 0
    return 0 if gpus == [] else 1


def train_job_threads(config: Mapping[str, Any], gpus: list[str] | None, cores: int | None) -> int:
    """A training job's threads: `train_threads` on a CPU (cores decide how many run at once)
    or on a cluster; on a machine with GPUs, a share of the cores small enough that every GPU
    slot gets a job (a GPU job feeds the GPU with a thread or two)."""
    threads = int(config["train_threads"])
    if not gpus or not cores:
        return threads
    slots = len(gpus) * int(config["runs_per_gpu"])
    return max(1, min(threads, cores // slots))


def describe_gpus(config: Mapping[str, Any], gpus: list[str], threads: int) -> str:
    """The line Snakemake prints as it starts, on a machine with GPUs."""
    per = int(config["runs_per_gpu"])
    return (
        f"fpt: {len(gpus)} GPU(s) found ({','.join(gpus)}), {per} run(s) per GPU: up to "
        f"{len(gpus) * per} training jobs at a time, {threads} thread(s) each"
    )


def gpu_model(gpu: str) -> str | None:
    """The catalogue name (fpt.plan.GPUS) of GPU `gpu` as nvidia-smi names it; None where
    nvidia-smi is missing or names a GPU the catalogue lacks. Asking torch would initialise
    CUDA in the Snakemake process and hold a context on the GPU for the whole run."""
    import subprocess

    from fpt import plan

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", gpu],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return plan.gpu_for_device_name(out.stdout.strip()) if out.returncode == 0 else None


def plan_summary(config: Mapping[str, Any], gpus: list[str] | None, source: str) -> str:
    """The plan's total (`fpt plan`) for the hardware found, printed as the workflow starts:
    on this CPU, or on the GPU model found (else the config's `estimate.gpu`), divided over
    the GPUs found."""
    from fpt import plan

    found = gpu_model(gpus[0]) if gpus else None
    hw = plan.Hardware.from_config(config, gpu=found)
    total = plan.plan(config, hw, source=source).total
    if config["device"] == "cpu" or gpus == []:
        cost = f"about {plan.fmt_duration(total.cpu_s)} on this CPU, one run after another"
    else:
        cost = f"about {plan.fmt_duration(total.gpu_fused_s)} on one {plan.GPUS[hw.gpu].name}"
        if gpus:
            each = plan.fmt_duration(total.gpu_fused_s / len(gpus))
            cost += f", ~{each} on the {len(gpus)} GPU(s) here"
    return f"fpt plan: {total.runs} runs, {cost} (details: fpt plan --configfile {source})"
