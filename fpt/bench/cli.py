"""Command-line glue of the benchmarks: `fpt bench` and the `bench-*` commands
(BENCHMARKS.md says which figure each one makes). fpt.cli registers them with
`add_subcommands`; the measuring modules are imported only when a command runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fpt.cli_args import add_model_args, option_arg, spec_from_args


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _emit(out: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(out, indent=2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    print(text)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--iters", type=int, default=10, help="timed steps")
    p.add_argument("--no-reference", action="store_true", help="skip the reference-style loop")
    p.add_argument(
        "--eval-examples",
        type=int,
        default=64,
        help="time evaluation on this many test examples (0: skip)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile our model")
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also time our loop with each optimisation undone, one at a time",
    )
    p.add_argument(
        "--fake-data",
        action="store_true",
        help="image tasks: random images in the real file layout (no download)",
    )
    p.add_argument("--json", type=Path, help="also write the JSON here")


def run_bench(args: argparse.Namespace) -> int:
    from fpt.bench.step import bench

    spec = spec_from_args(args)
    _threads(args.threads)
    out = bench(
        spec,
        args.device,
        args.warmup,
        args.iters,
        reference=not args.no_reference,
        weights_dir=args.weights_dir,
        eval_examples=args.eval_examples,
        compile=args.compile,
        ablations=args.ablations,
        fake_data=args.fake_data,
        data_dir=args.data_dir,
    )
    _emit(out, args.json)
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from fpt.bench.pipeline import bench_collect

    _emit(bench_collect(args.files, args.workdir), args.json)
    return 0


def _cmd_dryrun(args: argparse.Namespace) -> int:
    from fpt.bench.pipeline import bench_dryrun

    _emit(bench_dryrun(args.configfile, args.repeats, runs=args.runs), args.json)
    return 0


def _cmd_tables(args: argparse.Namespace) -> int:
    from fpt.bench.tables import TARGETS, bench_tables

    targets = args.targets or TARGETS
    _emit(bench_tables(args.runs, targets, args.configfile, args.evals, args.workdir), args.json)
    return 0


def _cmd_scaling(args: argparse.Namespace) -> int:
    from fpt.bench.scaling import SEQ_LENS, SIZES, bench_scaling

    _threads(args.threads)
    bench_scaling(
        args.out,
        tuple(args.seq_lens or SEQ_LENS),
        tuple(args.sizes or SIZES),
        point_budget_s=args.point_budget_s,
    )
    print((args.out / "scaling.md").read_text(), end="")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from fpt.bench.cache import bench_cache
    from fpt.spec import RunSpec

    _threads(args.threads)
    options = dict(args.option)
    spec = RunSpec(
        task=args.task,
        backbone=args.backbone,
        size=args.size,
        init=args.init,
        trainable="output_only",
        batch_size=args.batch_size,
        micro_batch_size=args.batch_size,
        options=options,
    )
    _emit(bench_cache(spec, args.device, cache_examples=args.cache_examples), args.json)
    return 0


def _cmd_fused(args: argparse.Namespace) -> int:
    from fpt.bench.fused import bench_fused
    from fpt.models.families import family
    from fpt.spec import RunSpec

    _threads(args.threads)
    spec = RunSpec(
        task=args.task,
        backbone=args.backbone,
        size=args.size or family(args.backbone).default_size,
        init="random",
        batch_size=args.batch_size,
        options=dict(args.option),
    )
    _emit(
        bench_fused(spec, args.runs, args.frozen, args.device, args.warmup, args.iters), args.json
    )
    return 0


def add_subcommands(sub) -> None:
    """`fpt bench`, bench-collect, bench-dryrun, bench-tables, bench-scaling, bench-cache."""
    p = sub.add_parser(
        "bench",
        help="time warm training steps and eval; FLOP/s vs measured matmul peak and vs a reference-style loop (JSON)",
    )
    add_model_args(p)
    add_bench_args(p)
    p.set_defaults(func=run_bench)

    p = sub.add_parser("bench-collect", help="time collecting N synthetic run files (JSON)")
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--workdir", type=Path, help="where the temporary run files go")
    p.add_argument("--json", type=Path)
    p.set_defaults(func=_cmd_collect)

    p = sub.add_parser("bench-dryrun", help="time `snakemake -n` of a config (JSON)")
    p.add_argument("--configfile", default="config.yaml")
    p.add_argument(
        "--runs",
        type=int,
        help="plan a synthetic config of exactly this many runs made from --configfile "
        "(its seed lists grown) instead of the config itself; also times fpt.grid alone",
    )
    p.add_argument("--repeats", type=int, default=1, help="report the fastest of N")
    p.add_argument("--json", type=Path)
    p.set_defaults(func=_cmd_dryrun)

    p = sub.add_parser(
        "bench-tables",
        help="time rendering tables and figures whose experiments hold N synthetic runs (JSON)",
    )
    p.add_argument("--runs", type=int, default=10_000, help="runs in each target's experiments")
    p.add_argument("--targets", nargs="*", help="default: tables 1, 2, 4, 13 and convergence")
    p.add_argument("--configfile", default="config.yaml", help="the config the runs scale")
    p.add_argument("--evals", type=int, default=11, help="evaluations per run")
    p.add_argument("--workdir", type=Path, help="where the temporary metrics and outputs go")
    p.add_argument("--json", type=Path)
    p.set_defaults(func=_cmd_tables)

    p = sub.add_parser(
        "bench-scaling", help="step time vs sequence length and model size (json, md, png)"
    )
    p.add_argument("--out", type=Path, default=Path("benchmarks"))
    p.add_argument("--seq-lens", type=int, nargs="*")
    p.add_argument("--sizes", nargs="*")
    p.add_argument("--point-budget-s", type=float, default=60.0, help="skip slower points")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=_cmd_scaling)

    p = sub.add_parser(
        "bench-cache", help="output-only training per epoch: uncached vs cached features (JSON)"
    )
    p.add_argument("--task", default="digits")
    p.add_argument("--backbone", default="gpt2")
    p.add_argument("--size", default="small")
    p.add_argument("--init", default="random")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--option", action="append", default=[], type=option_arg, metavar="KEY=VALUE")
    p.add_argument("--cache-examples", type=int, default=128)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int)
    p.add_argument("--json", type=Path)
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser(
        "bench-fused",
        help="runs x steps per second: a fused pack (fpt.fused) vs the same runs stepped alone (JSON)",
    )
    p.add_argument("--task", default="bit_xor")
    p.add_argument("--backbone", default="gpt2")
    p.add_argument("--size", help="default: the family's default size")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--option", action="append", default=[], type=option_arg, metavar="KEY=VALUE")
    p.add_argument("--runs", type=int, default=3, help="runs in the pack")
    p.add_argument(
        "--frozen",
        default="shared",
        choices=["shared", "per_run"],
        help="shared: runs of one frozen backbone (lrs; pretrained seeds); per_run: random "
        "backbones of different seeds",
    )
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int)
    p.add_argument("--json", type=Path)
    p.set_defaults(func=_cmd_fused)
