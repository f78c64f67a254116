"""A ListOps generator that writes LRA's file format, so ListOps runs without the 7.7 GB LRA
download (the offline demo uses it at short lengths).

Same distribution as LRA's `listops/listops.py` generator: a node is an operator (MIN, MAX,
MED, SM) with 2..`max_args` arguments, each a value 0-9 or (below `max_depth`) another node;
at each position below the maximum depth a value is drawn with probability 0.75, otherwise a
node. A tree is kept when `min_length < length < max_length`, where `length` counts values,
operators and closing brackets (the parentheses are not counted, as in LRA). Duplicates are
dropped. MED is the integer part of the median (`int(np.median(args))`, as LRA computes
it), SM is the sum mod 10. Each tree is written with round parentheses around every pair,
exactly as LRA's `to_string`, e.g. `( ( ( ( [MAX 2 ) 9 ) 4 ) ] )` followed by a tab and the
answer, under the header `Source\tTarget`, into `basic_{train,val,test}.tsv`.

Unlike LRA, which shuffles through a Python set (order depends on the hash seed), the output
is a pure function of the parameters: the same seed gives byte-identical files.

    fpt make-listops --out-dir data/my-listops --train 2000 --val 200 --test 200 \\
        --min-length 20 --max-length 100 --seed 0
    python -m fpt.tasks.listops_gen ...   (same options)
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MIN, MAX, MED, SUM_MOD = "[MIN", "[MAX", "[MED", "[SM"
END = "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
VALUE_P = 0.25  # LRA: a node (not a value) is drawn with probability 0.25 below max depth
SPLITS = ("train", "val", "test")
GENERATED_FOLDER = "listops-generated"


@dataclass(frozen=True)
class GenParams:
    min_length: int = 500
    max_length: int = 2000
    max_depth: int = 10
    max_args: int = 10
    n_train: int = 96000
    n_val: int = 2000
    n_test: int = 2000
    seed: int = 0

    @property
    def name(self) -> str:
        """Folder name that encodes every parameter (so Snakemake can rebuild it from the path)."""
        return (
            f"len{self.min_length}-{self.max_length}_depth{self.max_depth}_args{self.max_args}"
            f"_n{self.n_train}-{self.n_val}-{self.n_test}_seed{self.seed}"
        )

    @classmethod
    def from_name(cls, name: str) -> GenParams:
        m = re.fullmatch(r"len(\d+)-(\d+)_depth(\d+)_args(\d+)_n(\d+)-(\d+)-(\d+)_seed(\d+)", name)
        if not m:
            raise ValueError(f"not a generated ListOps folder name: {name!r}")
        return cls(*map(int, m.groups()))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> GenParams:
        """Task options `gen_min_length`, `gen_max_length`, `gen_max_depth`, `gen_max_args`,
        `gen_n_train`, `gen_n_val`, `gen_n_test`, `gen_seed` (LRA's values by default)."""
        vals = {k: int(options[f"gen_{k}"]) for k in asdict(cls()) if f"gen_{k}" in options}
        return cls(**vals)

    def folder(self, data_dir: str | Path) -> Path:
        return Path(data_dir) / GENERATED_FOLDER / self.name

    def marker(self, data_dir: str | Path) -> Path:
        return self.folder(data_dir) / ".complete"


class _TooLong(Exception):
    pass


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int, budget=None):
    """LRA's generate_tree: (tree, length) with tree a nested pair structure. With `budget`
    (a one-element list holding the lengths still allowed), generation stops with _TooLong
    as soon as the tree is certain to be too long: the same accepted trees, far less work."""
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise _TooLong
        return rng.randrange(10), 1
    length = 2  # the operator and the closing bracket
    if budget is not None:
        budget[0] -= 2
        if budget[0] < 0:
            raise _TooLong
    values = []
    for _ in range(rng.randint(2, max_args)):
        sub, sub_len = generate_tree(rng, depth + 1, max_depth, max_args, budget)
        values.append(sub)
        length += sub_len
    t: Any = (rng.choice(OPERATORS), values[0])
    for v in values[1:]:
        t = (t, v)
    return (t, END), length


def to_string(t) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, int):
        return str(t)
    return "( " + to_string(t[0]) + " " + to_string(t[1]) + " )"


def _apply(op: str, args: list[int]) -> int:
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:  # int(np.median(args)): the mean of the middle pair, truncated
        s = sorted(args)
        n = len(s)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
    if op == SUM_MOD:
        return sum(args) % 10
    raise ValueError(op)


def to_value(t):
    """LRA's to_value: evaluate a tree (partial applications are (op, [args]) pairs)."""
    if not isinstance(t, tuple):
        return t
    left, right = to_value(t[0]), to_value(t[1])
    if left in OPERATORS:
        return (left, [right])
    if right == END:
        return _apply(left[0], left[1])
    return (left[0], left[1] + [right])


def generate(params: GenParams) -> dict[str, list[tuple[str, int]]]:
    rng = random.Random(params.seed)
    total = params.n_train + params.n_val + params.n_test
    seen: dict[str, int] = {}
    while len(seen) < total:
        try:
            budget = [params.max_length - 1]
            tree, length = generate_tree(rng, 1, params.max_depth, params.max_args, budget)
        except _TooLong:
            continue
        if params.min_length < length < params.max_length:
            s = to_string(tree)
            if s not in seen:
                seen[s] = to_value(tree)
    items = list(seen.items())
    a, b = params.n_train, params.n_train + params.n_val
    return {"train": items[:a], "val": items[a:b], "test": items[b:]}


def write_files(params: GenParams, out_dir: str | Path) -> Path:
    """Write basic_{train,val,test}.tsv (each atomically) and then the `.complete` marker."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in generate(params).items():
        path = out_dir / f"basic_{split}.tsv"
        tmp = path.with_suffix(".tsv.partial")
        with open(tmp, "w", newline="") as f:
            f.write("Source\tTarget\n")
            f.writelines(f"{src}\t{tgt}\n" for src, tgt in rows)
        os.replace(tmp, path)
    marker = out_dir / ".complete"
    marker.write_text(params.name + "\n")
    return out_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = GenParams()
    p.add_argument("--out-dir", type=Path, help="where basic_*.tsv go")
    p.add_argument(
        "--data-dir",
        type=Path,
        help=f"with --from-name or without --out-dir: write to DATA_DIR/{GENERATED_FOLDER}/<name>",
    )
    p.add_argument("--from-name", help="take every parameter from a generated folder name")
    p.add_argument("--train", type=int, default=d.n_train)
    p.add_argument("--val", type=int, default=d.n_val)
    p.add_argument("--test", type=int, default=d.n_test)
    p.add_argument("--min-length", type=int, default=d.min_length)
    p.add_argument("--max-length", type=int, default=d.max_length)
    p.add_argument("--max-depth", type=int, default=d.max_depth)
    p.add_argument("--max-args", type=int, default=d.max_args)
    p.add_argument("--seed", type=int, default=d.seed)


def run(args: argparse.Namespace) -> Path:
    if args.from_name:
        params = GenParams.from_name(args.from_name)
    else:
        params = GenParams(
            args.min_length,
            args.max_length,
            args.max_depth,
            args.max_args,
            args.train,
            args.val,
            args.test,
            args.seed,
        )
    if params.max_length - params.min_length < 2 or params.max_args < 2:
        raise ValueError("need max_length - min_length >= 2 and max_args >= 2")
    out = args.out_dir or params.folder(args.data_dir or "data")
    return write_files(params, out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpt.tasks.listops_gen", description=__doc__)
    add_arguments(p)
    print(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
