"""Command-line arguments shared by `fpt train`, `fpt describe` and the `fpt bench*` commands:
the model and shape options that name one run, and the spec they rebuild. fpt.cli and
fpt.bench.cli both import them from here (neither imports the other's)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from fpt.spec import LSTM_CELLS, PRECISIONS, RANDOM_INITS, RunSpec


def depth_arg(v: str) -> int | str:
    """--depth: 'all' or a positive number of blocks."""
    if v == "all":
        return v
    try:
        d = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"depth must be 'all' or a positive integer, not {v!r}"
        ) from None
    if d < 1:
        raise argparse.ArgumentTypeError("depth must be >= 1")
    return d


def option_arg(v: str) -> tuple[str, object]:
    """--option KEY=VALUE, VALUE read as JSON where it parses (else kept as a string)."""
    if "=" not in v:
        raise argparse.ArgumentTypeError(f"--option takes KEY=VALUE (VALUE as JSON), not {v!r}")
    k, raw = v.split("=", 1)
    try:
        return k, json.loads(raw)
    except json.JSONDecodeError:
        return k, raw


def add_model_args(p: argparse.ArgumentParser, steps: bool = True) -> None:
    """The options of one run: model and task always; with `steps`, also the training
    settings, the device and the thread count."""
    from fpt.models import FAMILIES, INITS, PRESETS
    from fpt.models.fpt import INPUT_INITS
    from fpt.tasks import TASKS

    d = {f.name: f.default for f in fields(RunSpec) if f.name != "options"}
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--backbone", required=True, choices=sorted(FAMILIES))
    p.add_argument("--size", help="model size (default: the family's default, e.g. small for gpt2)")
    p.add_argument("--init", default=d["init"], choices=INITS)
    p.add_argument("--trainable", default=d["trainable"], choices=list(PRESETS))
    p.add_argument(
        "--depth", default=d["depth"], type=depth_arg, help="keep the first K blocks, or 'all'"
    )
    p.add_argument("--input-init", default=d["input_init"], choices=INPUT_INITS)
    p.add_argument(
        "--random-init",
        default=d["random_init"],
        choices=RANDOM_INITS,
        help="how a random backbone is drawn: paper (transformers 4.1.1's scheme) or library",
    )
    p.add_argument(
        "--backbone-dropout",
        default=d["backbone_dropout"],
        type=float,
        help="dropout inside the backbone (default: the reference's for the family)",
    )
    p.add_argument("--lstm-cell", default=d["lstm_cell"], choices=LSTM_CELLS)
    p.add_argument(
        "--option",
        action="append",
        default=[],
        type=option_arg,
        metavar="KEY=VALUE",
        help="task option",
    )
    p.add_argument(
        "--weights-dir",
        type=Path,
        help="local from_pretrained folders (default: $FPT_WEIGHTS_DIR or weights/)",
    )
    p.add_argument("--data-dir", type=Path, help="datasets folder")
    p.add_argument(
        "--allow-unverified-pickles",
        action="store_true",
        help="read CIFAR-10 / homology pickle files that match no published or recorded "
        "checksum, after a warning (config key allow_unverified_pickles; not part of the run)",
    )
    p.add_argument(
        "--init-from",
        type=Path,
        help="init bit_memory: the finished Bit Memory run folder to load the backbone from",
    )
    if steps:
        p.add_argument("--lr", default=d["lr"], type=float)
        p.add_argument("--seed", default=d["seed"], type=int)
        p.add_argument("--steps", default=d["steps"], type=int)
        p.add_argument("--batch-size", default=d["batch_size"], type=int)
        p.add_argument("--micro-batch-size", default=d["micro_batch_size"], type=int)
        p.add_argument("--eval-every", default=d["eval_every"], type=int)
        p.add_argument("--eval-batch-size", default=d["eval_batch_size"], type=int)
        p.add_argument("--ckpt-every", default=d["ckpt_every"], type=int)
        p.add_argument(
            "--patience",
            default=d["patience"],
            type=int,
            help="early stopping: evaluations without a new best val accuracy (0 = off)",
        )
        p.add_argument("--precision", default=d["precision"], choices=PRECISIONS)
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--threads", type=int, help="CPU threads for torch")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The RunSpec that `add_model_args`' options name (the family's default size if none)."""
    from fpt.models.families import family

    size = args.size or family(args.backbone).default_size
    keys = {f.name for f in fields(RunSpec)} - {"options", "size"}
    values = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    return RunSpec.from_json({**values, "size": size, "options": dict(args.option)})
