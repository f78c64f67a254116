"""ListOps (LRA): evaluate a nested MIN/MAX/MED/SM expression over digits; 10 classes.

Reads LRA's `listops-1000/basic_{train,val,test}.tsv` (header `Source\tTarget`, one
expression and its answer per line) from the data dir (`fpt fetch-data listops`), or files
of the same format made by `fpt make-listops` (option `source: generated`, see
`fpt.tasks.listops_gen`). Token ids are right-padded with 0 (the pad id); how the model
reads a padded batch is the `readout` option.

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
  size of LRA's val file), `data_seed`. `val_size: 0` holds nothing out: the task trains on
  the whole training file, as the reference did, and has no "val" split (`eval_splits` is
  ("test",), `has_val` False). `fixed` reads its val split from `basic_val.tsv` and ignores
  `val_size`.
- `readout`: how the output layer reads a padded expression.
  - `last_token` (default, fpt's fix): batches carry their lengths, the model masks the
    padding and reads the last real token; each batch is cut to its longest expression.
  - `reference`: what the reference code did. Its LRA input pipeline pads every expression
    to 512 (`padded_batch(batch_size, padded_shapes={'inputs': [max_length]})`, pad id 0),
    and its model applies no attention mask and reads the output at the last position,
    which for every expression shorter than 512 is a padding token. Here: batches carry
    `lengths=None` (so fpt's model applies no mask and reads the last position) and are
    padded with 0 to `max_length` always. The paper config uses `reference`, because it is
    the paper's experiment; `last_token` is the fix. Why it matters: for a causal GPT-2
    the last padded position still attends to every real token (and to the pads before it),
    so the readout sees the whole expression, through a position whose input is the pad
    embedding; for a bidirectional backbone (BERT, T5, Longformer, ViT) the padding is
    attended to by every real token too, and changes their states. Cost: `reference` runs
    all 512 tokens of every example, where `last_token` cuts each batch to its longest.

Download (dataset `listops`, declared here; fpt.data.download does the resuming and
marking): https://storage.googleapis.com/long-range-arena/lra_release.gz (a tar.gz, ~7.7 GB).
No checksum is published: Content-Length, tar integrity and the TSV headers are checked, the
SHA-256 of the archive and of the TSVs is recorded in the marker and checked by later runs;
only `listops-1000/` is extracted, the archive is then deleted.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fpt import data as fdata
from fpt.data import download as dl
from fpt.tasks.base import HeadSpec, InputSpec
from fpt.tasks.dataset import Split, TokenTask, check_readout, check_size, hold_out, pad_ids
from fpt.tasks.listops_gen import GenParams
from fpt.tasks.registry import register

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


LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
# No checksum is published for the LRA release (neither by the LRA repository nor by the
# bucket): the SHA-256 of what was downloaded is recorded in listops-1000/.complete instead.
LRA_MD5 = None
LRA_FILES = [f"basic_{s}.tsv" for s in ("train", "val", "test")]


def fetch_listops(data_dir: Path, keep_archive: bool = False) -> Path:
    """No checksum is published for the LRA release: the first download records the SHA-256
    of the archive and of the three TSVs in the marker; later runs check the TSVs against it
    (fetching again on a mismatch) and a new download of the archive against the recorded
    archive digest."""
    folder = data_dir / LISTOPS_DATA.folder
    recorded = dl.recorded_sha256("listops", data_dir)
    have = all((folder / n).is_file() for n in LRA_FILES)
    digests = {}
    if have:
        for n in LRA_FILES:
            key = dl.relpath(folder / n, data_dir)
            digests[key] = dl.sha256sum(folder / n)
            if key in recorded and recorded[key] != digests[key]:
                print(
                    f"{folder / n}: SHA-256 {digests[key]} differs from the {recorded[key]} "
                    "recorded when it was downloaded; fetching it again",
                    file=sys.stderr,
                )
                have = False
    if not have:
        archive_path = data_dir / "lra_release.tar.gz"
        archive, sha = dl.download_hashed(
            LRA_URL,
            archive_path,
            LRA_MD5,
            timeout=300,
            sha256=recorded.get(dl.relpath(archive_path, data_dir)),
            hint=fdata.fetch_hint("listops", data_dir),
        )
        digests = {dl.relpath(archive, data_dir): sha}
        tmp = data_dir / "lra_release.partial"
        got = dl.extract(archive, tmp, select=lambda n: "listops-1000/" in n)
        found = {Path(n).name: tmp / n for n in got}
        missing = [n for n in LRA_FILES if n not in found]
        if missing:
            raise ValueError(f"{archive}: no listops-1000/{missing} inside")
        folder.mkdir(parents=True, exist_ok=True)
        for n in LRA_FILES:
            os.replace(found[n], folder / n)
            digests[dl.relpath(folder / n, data_dir)] = dl.sha256sum(folder / n)
        shutil.rmtree(tmp, ignore_errors=True)
        if not keep_archive:
            archive.unlink()
    for n in LRA_FILES:
        read_tsv(folder / n)  # raises on a bad file
    return dl.write_marker("listops", data_dir, digests)


LISTOPS_DATA = fdata.DatasetInfo(
    "listops",
    "listops-1000",
    fetch_listops,
    "LRA's ListOps TSVs from lra_release.gz (7.7 GB download; only listops-1000 is kept)",
)


@register
class ListOps(TokenTask):
    name = "listops"
    label = "ListOps"
    paper_order = 2
    datasets = (LISTOPS_DATA,)
    defaults = {
        **TokenTask.defaults,
        "tokenization": "faithful",
        "max_length": None,
        "source": "lra",
        "val_size": None,
        "readout": "last_token",
    }
    reference_pads_to_max = True  # readout reference: every expression padded to max_length

    @classmethod
    def shapes(cls, options: dict[str, Any] | None = None) -> tuple[InputSpec, HeadSpec]:
        opts = cls.options_of(options)
        tok = opts["tokenization"]
        if tok not in TOKENIZATIONS:
            raise ValueError(f"listops: tokenization={tok!r}; use one of {TOKENIZATIONS}")
        check_readout("listops", opts)
        max_length = int(opts["max_length"] or DEFAULT_MAX_LENGTH[tok])
        if max_length < 1:
            raise ValueError(f"listops: max_length={max_length} must be positive")
        vocab = FAITHFUL_VOCAB if tok == "faithful" else FIXED_VOCAB
        return (
            InputSpec("tokens", len(vocab), max_length),
            HeadSpec(n_answer_tokens=1, outputs_per_token=1, n_classes=10),
        )

    @classmethod
    def required_files(cls, options: dict[str, Any] | None, data_dir: str | Path) -> list[str]:
        """LRA's files (the `listops` download), or with `source: generated` the generated
        files (rule make_listops)."""
        if cls.options_of(options)["source"] == "generated":
            return [str(GenParams.from_options(options or {}).marker(data_dir))]
        return super().required_files(options, data_dir)

    @classmethod
    def published_split_sizes(cls, options: dict[str, Any] | None = None) -> dict[str, int | None]:
        opts = cls.options_of(options)
        if opts["source"] == "generated":
            gen = GenParams.from_options(opts)
            n_train, n_val, n_test = gen.n_train, gen.n_val, gen.n_test
        else:
            n_train, n_val, n_test = 96000, 2000, 2000  # LRA's listops-1000
        if opts["tokenization"] != "faithful":
            return {"train": n_train, "val": n_val, "test": n_test}
        # faithful: "test" is LRA's val file; "val" is held out of the training file
        val = opts["val_size"]
        val = max(1, min(2000, n_train // 10)) if val is None else int(val)
        return {"train": n_train - val, **({"val": val} if val else {}), "test": n_val}

    @classmethod
    def has_val(cls, options: dict[str, Any] | None = None) -> bool:
        opts = cls.options_of(options)
        if opts["tokenization"] != "faithful" or opts["val_size"] is None:
            return True
        return check_size("listops", "val_size", opts["val_size"]) > 0

    def setup(self) -> None:
        super().setup()
        self.input, self.head = self.shapes(self.options)
        self.tokenization = tok = self.options["tokenization"]
        self.max_length = self.input.n_tokens

        data_dir = self.data_dir
        source = self.options["source"]
        if source == "lra":
            folder = Path(data_dir) / LISTOPS_DATA.folder
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
            val_size = self.options["val_size"]
            if val_size is None:
                val_size = max(1, min(2000, len(train) // 10))
            rest, held = hold_out("listops", len(train), val_size, int(self.options["data_seed"]))
            if held is None:  # val_size 0: the whole training file trains, no val split
                self.splits = {"train": train, "test": load("val")}
                self.eval_splits = tuple(s for s in self.eval_splits if s != "val")
            else:
                self.splits = {
                    "train": train.take(rest),
                    "val": train.take(held),
                    "test": load("val"),
                }
        else:
            self.splits = {"train": load("train"), "val": load("val"), "test": load("test")}
        self._to_device()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tokenization": self.tokenization}
