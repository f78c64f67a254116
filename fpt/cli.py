"""The `fpt` command: train one run, describe a model, fetch pretrained weights and datasets,
generate ListOps files."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fpt import attempt_log, runlock
from fpt.cli_args import add_model_args, spec_from_args


def cmd_train(args: argparse.Namespace) -> int:
    """Train one run. First, one header line per attempt on stderr (host, pid, SLURM job,
    time): with --log every attempt goes to one log, which then reads in order. A run
    folder that another process trains: exit EXIT_LOCKED (73) naming it, the folder untouched.
    On CUDA outside SLURM it first leases one GPU (fpt.gpu_lease: FPT_GPUS, FPT_RUNS_PER_GPU),
    waiting while all are leased, and trains on it as cuda:0."""
    if args.log:
        attempt_log.append_attempts_to(args.log)
    print(runlock.attempt_header(args.out), file=sys.stderr, flush=True)
    from fpt import gpu_lease
    from fpt.train import train

    with gpu_lease.lease(args.device, label=str(args.out)):  # before CUDA is initialised
        metrics = train(
            spec_from_args(args),
            args.out,
            device=args.device,
            weights_dir=args.weights_dir,
            data_dir=args.data_dir,
            threads=args.threads,
            init_from=args.init_from,
            compile=args.compile,
            lock_wait=args.lock_wait,
        )
    print(metrics)
    return 0


def cmd_train_pack(args: argparse.Namespace) -> int:
    """Train several runs of one backbone, differing only in seed and/or lr, as one fused
    pack (fpt.fused), each into RESULTS/<run path>; leases one GPU as `train` does."""
    from fpt import gpu_lease
    from fpt.fused import train_pack
    from fpt.spec import RunSpec

    specs = [RunSpec.from_json(json.loads(s)) for s in args.spec]
    outs = [args.results / s.path for s in specs]
    if args.log:
        attempt_log.append_attempts_to(args.log)
    for out in outs:
        print(runlock.attempt_header(out), file=sys.stderr, flush=True)
    with gpu_lease.lease(args.device, label=f"pack of {len(specs)}: {outs[0]}"):
        metrics = train_pack(
            specs,
            outs,
            device=args.device,
            weights_dir=args.weights_dir,
            data_dir=args.data_dir,
            threads=args.threads,
            lock_wait=args.lock_wait,
        )
    print("\n".join(map(str, metrics)))
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    """Counts from the architecture alone: the task's shapes come from its options
    (`Task.shapes`, no data read) and the backbone from its shipped architecture config
    with init random (the architecture, hence every count, is the pretrained one's; no
    weights read). The model is built on the meta device: shapes without storage, so even
    GPT-2 xl costs no memory. --data-dir, --weights-dir and --init-from are accepted (the
    other commands take them) and not read."""
    import types

    import torch

    from fpt.models import build_model, count_params
    from fpt.models.reach import PAPER_RULE, paper_count, paper_options
    from fpt.tasks import TASKS
    from fpt.tasks.base import shape_summary

    spec = spec_from_args(args)
    task_cls = TASKS[spec.task]

    def model_for(options: dict):
        input_spec, head = task_cls.shapes(options)
        shapes = types.SimpleNamespace(input=input_spec, head=head)
        with torch.device("meta"):
            return build_model(
                shapes,
                spec.backbone,
                spec.size,
                "random",
                spec.trainable,
                spec.depth_int,
                spec.input_init,
            )

    options = dict(spec.options)
    model = model_for(options)
    counts = count_params(model)
    paper_opts = paper_options(spec.task, options)
    same = task_cls.shapes(paper_opts) == task_cls.shapes(options)
    paper_model = model if same else model_for(paper_opts)
    out = {
        "backbone": spec.backbone,
        "size": spec.size,
        "init": spec.init,
        "weights": "architecture only (counts do not need the weights)",
        "trainable_preset": spec.trainable,
        "depth": model.backbone.n_layers,
        "width": model.backbone.width,
        "total_params": counts["all"]["total"],
        "trainable_params": counts["all"]["trainable"],
        "reachable_params": counts["all"]["reachable"],
        "trainable_fraction": counts["all"]["trainable"] / counts["all"]["total"],
        "paper_convention": {"rule": PAPER_RULE, "params": paper_count(paper_model)},
        "groups": {k: v for k, v in counts.items() if k != "all"},
        "task_shape": shape_summary(spec.task, model.input_spec, model.head),
    }
    print(json.dumps(out, indent=2))
    return 0


def cmd_fetch_weights(args: argparse.Namespace) -> int:
    from fpt.models.families import family
    from fpt.models.weights import fetch_weights

    size = args.size or family(args.backbone).default_size
    print(fetch_weights(args.backbone, size, args.weights_dir))
    return 0


def cmd_fetch_data(args: argparse.Namespace) -> int:
    from fpt.data.download import fetch

    print(fetch(args.dataset, args.data_dir))
    return 0


def cmd_make_listops(args: argparse.Namespace) -> int:
    from fpt.tasks.listops_gen import run

    print(run(args))
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from fpt.analysis import attention

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    arrays = attention.first_layer_attention(
        args.run_dir, args.weights_dir, args.data_dir, args.init_from, args.examples, args.device
    )
    attention.save(arrays, args.out)
    print(json.dumps({"out": str(args.out), "accuracy": float(arrays["accuracy"])}))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from fpt.status import main as status_main

    return status_main(args.results, args.config, args.json)


def cmd_plan(args: argparse.Namespace) -> int:
    """The grid's cost before it starts (fpt.plan), or the estimate against finished runs."""
    from fpt import plan

    fmt = "json" if args.json else "tsv" if args.tsv else "md" if args.md else "text"
    hardware = {
        "gpu": args.gpu,
        "mfu": args.mfu,
        "launch_us": args.launch_us,
        "cpu_fraction": args.cpu_fraction,
        "cpu_op_us": args.cpu_op_us,
        "cpu_gflops": args.cpu_gflops,
        "threads": args.threads,
        "pack_size": args.pack_size,
    }
    print(plan.main(args.configfile, fmt, args.runs, args.compare, **hardware), end="")
    return 0


# Exit status when a result file could not be written for lack of space (EX_IOERR).
EXIT_DISK_FULL = 74


def _seconds(v: str) -> float:
    try:
        s = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {v!r}") from None
    if s < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one grid point; resumes from OUT's checkpoint")
    add_model_args(p)
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="run folder: metrics.parquet, spec.json, checkpoint/",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (speed only, not part of the run; pays on GPU, not on CPU: BENCHMARKS.md)",
    )
    p.add_argument(
        "--lock-wait",
        type=_seconds,
        metavar="SECONDS",
        help="while another process trains OUT (its .lock is held), wait this long, then exit "
        "73 naming it, touching nothing in OUT (default: $FPT_LOCK_WAIT, else 30; not part "
        "of the run)",
    )
    p.add_argument(
        "--log",
        type=Path,
        help="append this attempt's output to LOG, which keeps every attempt of the run in "
        "order even where Snakemake deletes it before a job (fpt.attempt_log)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "train-pack",
        help="train runs that differ only in seed/lr as one fused pack (fpt.fused); each "
        "resumes from its own checkpoint",
    )
    p.add_argument(
        "--spec",
        action="append",
        required=True,
        help="a run's spec.json contents (repeat: one per run of the pack)",
    )
    p.add_argument(
        "--results",
        required=True,
        type=Path,
        help="runs folder: each run goes to RESULTS/<run path>",
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int)
    p.add_argument("--weights-dir", type=Path)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--lock-wait", type=_seconds, metavar="SECONDS", help="as for train")
    p.add_argument("--log", type=Path, help="as for train: the pack's log, every attempt")
    p.set_defaults(func=cmd_train_pack)

    p = sub.add_parser(
        "describe",
        help="parameter counts (total/trainable/reachable per group, and as the paper counted) "
        "and task shape as JSON; reads no data and no weights",
    )
    add_model_args(p, steps=False)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser(
        "fetch-weights", help="download pretrained weights into the weights dir (needs internet)"
    )
    p.add_argument("--backbone", required=True)
    p.add_argument("--size")
    p.add_argument("--weights-dir", type=Path)
    p.set_defaults(func=cmd_fetch_weights)

    from fpt.tasks import DATASETS  # the datasets the tasks declare (FPT_TASK_MODULES too)
    from fpt.tasks.listops_gen import add_arguments as add_listops_gen_args

    p = sub.add_parser(
        "fetch-data", help="download and verify a dataset into the data dir (needs internet)"
    )
    p.add_argument(
        "dataset",
        choices=sorted(DATASETS),
        help="; ".join(f"{n}: {d.about}" if d.about else n for n, d in sorted(DATASETS.items())),
    )
    p.add_argument("--data-dir", type=Path, default=Path("data"))
    p.set_defaults(func=cmd_fetch_data)

    p = sub.add_parser(
        "make-listops", help="write generated ListOps files in LRA's TSV format (offline)"
    )
    add_listops_gen_args(p)
    p.set_defaults(func=cmd_make_listops)

    from fpt.bench import cli as bench_cli

    bench_cli.add_subcommands(sub)  # bench, bench-collect, bench-dryrun, bench-scaling, bench-cache

    p = sub.add_parser(
        "attention",
        help="first-layer attention of a finished run, from its final checkpoint (.npz)",
    )
    p.add_argument(
        "--run-dir", required=True, type=Path, help="the run folder (spec.json, checkpoint/)"
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--weights-dir", type=Path)
    p.add_argument("--data-dir", type=Path)
    p.add_argument(
        "--allow-unverified-pickles",
        action="store_true",
        help="read unverified CIFAR-10 / homology pickle files, after a warning",
    )
    p.add_argument("--init-from", type=Path, help="init=bit_memory: the source run folder")
    p.add_argument("--examples", type=int, default=256, help="test examples averaged")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser(
        "status",
        help="runs in progress (step, accuracy, rate, last write), finished and, with "
        "--config, pending; a summary of squeue --me where SLURM is installed",
    )
    p.add_argument(
        "--results",
        type=Path,
        help="results folder (default: the config's results_dir, else results)",
    )
    p.add_argument("--config", type=Path, help="a config: its grid's runs not started are pending")
    p.add_argument("--json", action="store_true", help="JSON instead of text tables")
    p.set_defaults(func=cmd_status)

    from fpt.plan import GPUS

    p = sub.add_parser(
        "plan",
        help="a config's cost before it starts: per experiment and for the whole grid, runs, "
        "training and evaluation FLOPs, time on this CPU and on a named GPU (lone runs and "
        "fused packs), memory per run (model: fpt/plan/)",
    )
    p.add_argument("--configfile", type=Path, default=Path("config.yaml"))
    p.add_argument("--gpu", choices=list(GPUS), help="the GPU to time (default: estimate.gpu)")
    p.add_argument("--mfu", type=float, help="fraction of the GPU's peak a step achieves")
    p.add_argument("--launch-us", type=float, help="GPU: microseconds per kernel launch")
    p.add_argument("--cpu-fraction", type=float, help="fraction of the measured CPU peak")
    p.add_argument("--cpu-op-us", type=float, help="CPU: microseconds of overhead per op")
    p.add_argument("--cpu-gflops", type=float, help="CPU fp32 peak to use instead of measuring")
    p.add_argument("--threads", type=int, help="CPU threads (default: train_threads)")
    p.add_argument(
        "--pack-size", type=int, help="runs per fused pack (default: pack_size if > 1, else 8)"
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON instead of a text table")
    out.add_argument("--tsv", action="store_true", help="TSV instead of a text table")
    out.add_argument("--md", action="store_true", help="Markdown instead of a text table")
    p.add_argument("--runs", action="store_true", help="--json / --tsv: one entry per run")
    p.add_argument(
        "--compare",
        type=Path,
        metavar="RESULTS_DIR",
        help="instead: predicted vs measured wall_s of the finished runs under RESULTS_DIR",
    )
    p.set_defaults(func=cmd_plan)

    args = parser.parse_args(argv)
    # --allow-unverified-pickles (train, attention, bench): the tasks read it from the
    # environment (fpt.data.trust), as the Snakemake jobs get it from the config
    from fpt.data import trust

    trust.export(getattr(args, "allow_unverified_pickles", False))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from fpt.files import DiskFull
    from fpt.models import BackboneUnavailable

    try:
        return args.func(args)
    except DiskFull as exc:  # nothing half-written: rerun once there is space
        print(f"fpt {args.command}: error: {exc.strerror}", file=sys.stderr)
        return EXIT_DISK_FULL
    except runlock.RunLocked as exc:  # another process trains the run: nothing touched
        print(f"fpt {args.command}: error: {exc}", file=sys.stderr)
        return runlock.EXIT_LOCKED
    except (BackboneUnavailable, FileNotFoundError, ValueError, runlock.LockUnsupported) as exc:
        print(f"fpt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
