"""ListOps (LRA): evaluate a nested MIN/MAX/MED/SM expression over digits; 10 classes.

Reads LRA's `listops-1000/basic_{train,val,test}.tsv` (header `Source\tTarget`, one
expression and its answer per line) from the data dir (`fpt fetch-data listops`), or files
of the same format made by `fpt make-listops` (option `source: generated`, see
`fpt.tasks.listops_gen`). Token ids are right-padded with 0 and batches carry their lengths;
the output layer reads the last real token.

Options:
- `tokenization`:
  - `faithful` (default) reproduces the reference code (kzl/universal-computation, which
    used LRA's input pipeline): tfds' Tokenizer keeps only alphanumeric runs, so every
    bracket and parenthesis is dropped (`[MAX` -> `MAX`; LRA issue #14) and the expression's
    structure is lost. Vocabulary of 15: pad=0, digits 0-9 = 1..10, MAX MED MIN SM = 11..14
    (a fixed order; the reference's order came from a Python set). Truncated to
    `max_length` 512. As in the paper, the number reported as "test" is measured on LRA's
    *validation* file (`basic_val.tsv`); the "val" split used for model selection is a
    seeded `val_size` slice held out of the training file, so selection never sees the
    reported examples.
  - `fixed`: every whitespace token is kept, brackets included. Vocabulary of 18: the 15
    above (operators as `[MAX` ...), then `]`, `(`, `)`. `max_length` defaults to 1024 (the
    most GPT-2 can take; LRA's expressions are up to ~2000 tokens without parentheses, so
    longer ones are still truncated, at the end). "val" = `basic_val.tsv`, "test" =
    `basic_test.tsv`.
- `max_length`: token cap (default 512 faithful, 1024 fixed); the input spec's n_tokens.
- `source`: `lra` (default, `<data_dir>/listops-1000`) or `generated`
  (`<data_dir>/listops-generated/<name>`, name from the `gen_*` options; made by rule
  `make_listops`).
- `val_size` (faithful only; default min(2000, a tenth of the training file), 2000 being the
  size of LRA's val file), `data_seed`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpt import data as fdata
from fpt.tasks.base import HeadSpec, InputSpec
from fpt.tasks.dataset import Split, TokenTask, carve, pad_ids
from fpt.tasks.listops_gen import GenParams

DIGITS = [str(d) for d in range(10)]
FAITHFUL_VOCAB = ["<pad>", *DIGITS, "MAX", "MED", "MIN", "SM"]
FIXED_VOCAB = ["<pad>", *DIGITS, "[MAX", "[MED", "[MIN", "[SM", "]", "(", ")"]
TOKENIZATIONS = ("faithful", "fixed")
DEFAULT_MAX_LENGTH = {"faithful": 512, "fixed": 1024}

# Multi-character tokens are first rewritten to one byte each, then a byte lookup table maps
# every character to its id: fast on LRA's 96k x ~3000-character training file.
_CODES = {"[MAX": "A", "[MED": "B", "[MIN": "C", "[SM": "D"}


def _lut(tokenization: str) -> np.ndarray:
    lut = np.full(256, -1, dtype=np.int16)  # -1: a character outside the vocabulary
    vocab = FAITHFUL_VOCAB if tokenization == "faithful" else FIXED_VOCAB
    for i, tok in enumerate(vocab[1:], start=1):
        code = _CODES.get(tok) or _CODES.get("[" + tok) or tok
        lut[ord(code)] = i
    lut[ord(" ")] = 0  # separators, removed before lookup
    if tokenization == "faithful":
        for ch in "[]()":  # dropped, as tfds' alphanumeric Tokenizer drops them
            lut[ord(ch)] = 0
    return lut


def tokenize(source: str, tokenization: str = "faithful") -> list[str]:
    """The token strings (reference behaviour for `faithful`, whitespace split for `fixed`)."""
    if tokenization == "fixed":
        return source.split()
    import re

    return re.findall(r"[A-Za-z0-9]+", source)


def encode(sources: list[str], tokenization: str) -> list[torch.Tensor]:
    """Expressions -> id sequences (unbounded length); ValueError on an unknown token."""
    lut = _lut(tokenization)
    out = []
    for src in sources:
        s = src
        for tok, code in _CODES.items():
            s = s.replace(tok, code)
        raw = np.frombuffer(s.encode("ascii", errors="replace"), dtype=np.uint8)
        ids = lut[raw]
        ids = ids[(ids != 0)]
        if (ids < 0).any():
            bad = sorted({chr(c) for c in raw[lut[raw] < 0]})
            raise ValueError(f"unknown ListOps characters {bad} in {src[:80]!r}")
        out.append(torch.from_numpy(ids.astype(np.uint8)))
    return out


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """LRA's TSV: header `Source\\tTarget`, then `expression\\tanswer` lines."""
    with open(path, newline="") as f:
        header = f.readline().rstrip("\r\n")
        if header != "Source\tTarget":
            raise ValueError(f"expected the header 'Source\\tTarget', found {header[:40]!r}")
        sources, targets = [], []
        for n, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            src, sep, tgt = line.rpartition("\t")
            if not sep or not tgt.strip().isdigit() or not 0 <= int(tgt) <= 9:
                raise ValueError(f"line {n} is not 'expression<TAB>answer 0-9'")
            sources.append(src)
            targets.append(int(tgt))
    if not sources:
        raise ValueError("no examples")
    return sources, targets


class ListOps(TokenTask):
    name = "listops"
    defaults = {
        **TokenTask.defaults,
        "tokenization": "faithful",
        "max_length": None,
        "source": "lra",
        "val_size": None,
    }

    def __init__(self, device: torch.device, options: dict[str, Any] | None = None):
        super().__init__(device, options)
        tok = self.options["tokenization"]
        if tok not in TOKENIZATIONS:
            raise ValueError(f"listops: tokenization={tok!r}; use one of {TOKENIZATIONS}")
        self.tokenization = tok
        self.max_length = int(self.options["max_length"] or DEFAULT_MAX_LENGTH[tok])
        vocab = FAITHFUL_VOCAB if tok == "faithful" else FIXED_VOCAB
        self.input = InputSpec("tokens", len(vocab), self.max_length)
        self.head = HeadSpec(n_answer_tokens=1, outputs_per_token=1, n_classes=10)

        data_dir = fdata.data_dir_of(self.options)
        source = self.options["source"]
        if source == "lra":
            folder = Path(data_dir) / fdata.DATASETS["listops"].folder
            hint = None
        elif source == "generated":
            params = GenParams.from_options(self.options)
            folder = params.folder(data_dir)
            hint = (
                f"Make it with `fpt make-listops --from-name {params.name} --data-dir {data_dir}` "
                f"(Snakemake: rule make_listops, target {params.marker(data_dir)})."
            )
        else:
            raise ValueError(f"listops: source={source!r}; use 'lra' or 'generated'")

        def load(split: str) -> Split:
            path = folder / f"basic_{split}.tsv"
            if not path.is_file():
                if hint:
                    raise FileNotFoundError(f"listops: data file {path} does not exist. {hint}")
                raise fdata.missing("listops", path, "listops", data_dir)
            try:
                sources, targets = read_tsv(path)
                ids = encode(sources, tok)
            except (ValueError, UnicodeDecodeError) as exc:
                if hint:
                    raise ValueError(
                        f"listops: data file {path} is corrupt ({exc}). Delete it; {hint}"
                    ) from None
                raise fdata.corrupt("listops", path, str(exc), "listops", data_dir) from None
            x, lengths = pad_ids(ids, self.max_length)
            return Split(x, torch.tensor(targets, dtype=torch.int64), lengths)

        if tok == "faithful":  # the paper's "test" is LRA's val file
            train = load("train")
            val_size = self.options["val_size"] or min(2000, len(train) // 10)
            rest, held = carve(len(train), int(val_size), int(self.options["data_seed"]))
            self.splits = {"train": train.take(rest), "val": train.take(held), "test": load("val")}
        else:
            self.splits = {"train": load("train"), "val": load("val"), "test": load("test")}
        self._to_device()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tokenization": self.tokenization}
