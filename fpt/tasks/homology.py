"""TAPE remote homology: a protein's amino-acid sequence -> its fold class (1195 classes).

Reads TAPE's LMDB files `remote_homology/remote_homology_<split>.lmdb` under the data dir
(`fpt fetch-data homology`). TAPE's format: an LMDB environment (a folder) whose key
b'num_examples' holds a pickled int and whose keys str(i).encode() hold pickled dicts with
'primary' (the amino-acid string) and 'fold_label' (int).

Tokenisation is TAPE's iupac vocabulary (30 ids): <pad>=0, <mask>, <cls>, <sep>, <unk>, then
A B C D E F G H I K L M N O P Q R S T U V W X Y Z; each sequence is wrapped in <cls> ... <sep>
(TAPE raises on letters outside the vocabulary; we map them to <unk>). Right-padded with 0
(<pad>); how the model reads a padded batch is the `readout` option:

- `last_token` (default, fpt's fix): batches carry Batch.lengths, the model masks the padding
  and reads the last real token (<sep>).
- `reference`: what the reference code did. TAPE's loader pads each batch with 0 to its
  longest sequence, and the reference model applies no attention mask and reads the output
  at the last position of the batch: the <sep> of the batch's longest sequence, a padding
  token for every other one. Here: batches carry `lengths=None` (fpt's model then applies no
  mask and reads the last position) and are padded with 0 to the batch's longest sequence,
  as TAPE's collate did. Evaluation keeps fpt's length-sorted batches (`TokenTask`), which is
  what TAPE's length-bucketed batch sampler approximates: sequences of similar length share
  a batch, so little padding comes before the read position. Training batches are drawn
  uniformly, not bucketed, so they hold more padding than TAPE's did.
  The paper config uses `reference`, because it is the paper's experiment; `last_token` is
  the fix. Why it matters: for a causal GPT-2 the last padded position still attends to every
  real token, so the readout sees the whole sequence, through a pad token's position; for a
  bidirectional backbone the padding is attended to by the real tokens and changes them.

Length cap `max_length` (default 1024, GPT-2's positions, <cls>/<sep> included). The
reference drops *batches* longer than 1024 from training and evaluation and rescales its
accuracy by 0.9739; here over-long *training* sequences are dropped (`overlength: drop`,
default) or cut (`truncate`), and every evaluation sequence is kept, cut to <cls> + the
first max_length - 2 residues + <sep>, so each split is scored on all of its examples.

Splits: "val" = TAPE's `valid` (what the paper reported as its test number, so tables report
it: `reported_split`), then the three TAPE test sets, each its own `split` value in the
metrics: test_fold (fold holdout), test_superfamily (superfamily holdout), test_family
(family holdout).

Download (dataset `homology`, declared here; fpt.data.download does the resuming, checking
and marking): http://s3.amazonaws.com/songlabdata/proteindata/data_pytorch/remote_homology.tar.gz,
md5 1d687bdeb9e3866f77504d6079eed00a (the one TorchDrug and PEER check for this URL; TAPE
itself publishes none), then every split's LMDB opens. The records are pickles, and
unpickling can run code: the fetch records the SHA-256 of each split's `data.mdb` as
extracted from the checked archive in the dataset's marker, and the task unpickles no
record of a file whose digest differs from the marker's (or that no marker records) unless
`allow_unverified_pickles` acknowledges it (`fpt.data.trust`).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import torch

from fpt import data as fdata
from fpt.data import download as dl
from fpt.data import trust
from fpt.tasks.base import HeadSpec, InputSpec
from fpt.tasks.dataset import Split, TokenTask, check_readout, pad_ids
from fpt.tasks.registry import register

IUPAC_VOCAB = ["<pad>", "<mask>", "<cls>", "<sep>", "<unk>", *"ABCDEFGHIKLMNOPQRSTUVWXYZ"]
PAD, CLS, SEP, UNK = 0, 2, 3, 4
N_CLASSES = 1195
# metrics split name -> TAPE file split name
SPLIT_FILES = {
    "train": "train",
    "val": "valid",
    "test_fold": "test_fold_holdout",
    "test_superfamily": "test_superfamily_holdout",
    "test_family": "test_family_holdout",
}
_LUT = torch.full((128,), UNK, dtype=torch.uint8)
for _i, _tok in enumerate(IUPAC_VOCAB[5:], start=5):
    _LUT[ord(_tok)] = _i


def encode(primary: str) -> torch.Tensor:
    """<cls> + residues + <sep> as iupac ids (letters outside the vocabulary -> <unk>)."""
    codes = torch.frombuffer(
        bytearray(primary.upper().encode("ascii", "replace")), dtype=torch.uint8
    )
    ids = _LUT[codes.long().clamp(max=127)]
    return torch.cat(
        [torch.tensor([CLS], dtype=torch.uint8), ids, torch.tensor([SEP], dtype=torch.uint8)]
    )


def read_lmdb(path: Path) -> tuple[list[str], list[int]]:
    """(primary strings, fold labels) of one TAPE LMDB file."""
    import lmdb

    env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False)
    try:
        with env.begin(write=False) as txn:
            raw = txn.get(b"num_examples")
            if raw is None:
                raise ValueError("no b'num_examples' key")
            n = int(pickle.loads(raw))
            seqs, labels = [], []
            for i in range(n):
                item = txn.get(str(i).encode())
                if item is None:
                    raise ValueError(f"example {i} of {n} is missing")
                d = pickle.loads(item)
                seqs.append(str(d["primary"]))
                labels.append(int(d["fold_label"]))
    finally:
        env.close()
    return seqs, labels


def _cut(ids: torch.Tensor, max_length: int) -> torch.Tensor:
    if len(ids) <= max_length:
        return ids
    return torch.cat([ids[: max_length - 1], ids[-1:]])  # keep <sep> last


HOMOLOGY_URL = "http://s3.amazonaws.com/songlabdata/proteindata/data_pytorch/remote_homology.tar.gz"
HOMOLOGY_MD5 = "1d687bdeb9e3866f77504d6079eed00a"  # TorchDrug / PEER; TAPE publishes none


def lmdb_data_file(path: Path) -> Path:
    """The file of an LMDB folder that holds its records (what the marker records)."""
    return path / "data.mdb"


def fetch_homology(data_dir: Path) -> Path:
    """LMDB folders whose data.mdb match the SHA-256s the marker recorded are kept; else the
    archive is downloaded (or a kept copy reused) and checked against HOMOLOGY_MD5, then
    extracted over them, and the marker records each data.mdb's SHA-256. No record is
    unpickled before its file is verified, so data placed by hand is checked, not trusted."""
    folder = data_dir / HOMOLOGY_DATA.folder
    paths = [folder / f"remote_homology_{s}.lmdb" for s in SPLIT_FILES.values()]
    recorded = dl.recorded_sha256("homology", data_dir)
    digests: dict[str, str] = {}
    verified = True
    for p in paths:
        mdb = lmdb_data_file(p)
        key = dl.relpath(mdb, data_dir)
        if not mdb.is_file():
            verified = False
            break
        digests[key] = dl.sha256sum(mdb)
        if recorded.get(key) != digests[key]:
            print(
                f"{mdb}: "
                + ("no SHA-256 recorded for it" if key not in recorded else "SHA-256 differs")
                + "; extracting the archive again to verify it",
                file=sys.stderr,
            )
            verified = False
            break
    if not verified:
        archive = dl.download_archive(
            HOMOLOGY_URL, "remote_homology.tar.gz", HOMOLOGY_MD5, "homology", data_dir
        )
        digests = dict(archive)
        for p in paths:
            mdb = lmdb_data_file(p)
            if not mdb.is_file():
                raise ValueError(f"{data_dir / next(iter(archive))}: no {mdb} inside")
            digests[dl.relpath(mdb, data_dir)] = dl.sha256sum(mdb)
    for p in paths:
        read_lmdb(p)  # raises on a bad file (each one verified above)
    return dl.write_marker("homology", data_dir, digests)


HOMOLOGY_DATA = fdata.DatasetInfo(
    "homology", "remote_homology", fetch_homology, "TAPE remote homology LMDBs, md5-checked"
)


@register
class RemoteHomology(TokenTask):
    name = "homology"
    label = "Homology"
    paper_order = 6
    reported_split = "val"  # the paper's number is on TAPE's valid split
    datasets = (HOMOLOGY_DATA,)
    eval_splits = ("val", "test_fold", "test_superfamily", "test_family")
    defaults = {
        **TokenTask.defaults,
        "max_length": 1024,
        "overlength": "drop",
        "readout": "last_token",
    }

    @classmethod
    def published_split_sizes(cls, options: dict[str, Any] | None = None) -> dict[str, int | None]:
        # TAPE's remote homology splits (before any over-length protein is dropped)
        return {
            "train": 12312,
            "val": 736,
            "test_fold": 718,
            "test_superfamily": 1254,
            "test_family": 1272,
        }

    @classmethod
    def shapes(cls, options: dict[str, Any] | None = None) -> tuple[InputSpec, HeadSpec]:
        opts = cls.options_of(options)
        if opts["overlength"] not in ("drop", "truncate"):
            raise ValueError("homology: overlength must be 'drop' or 'truncate'")
        check_readout("homology", opts)
        max_length = int(opts["max_length"])
        if max_length < 2:
            raise ValueError(f"homology: max_length={max_length} cannot hold <cls> and <sep>")
        return (
            InputSpec("tokens", len(IUPAC_VOCAB), max_length),
            HeadSpec(n_answer_tokens=1, outputs_per_token=1, n_classes=N_CLASSES),
        )

    def setup(self) -> None:
        super().setup()
        self.input, self.head = self.shapes(self.options)
        self.max_length = self.input.n_tokens
        data_dir = self.data_dir
        folder = data_dir / HOMOLOGY_DATA.folder
        self.n_dropped = 0
        for split, file_split in SPLIT_FILES.items():
            path = folder / f"remote_homology_{file_split}.lmdb"
            if not path.exists():
                raise fdata.missing("homology", path, "homology", data_dir)
            mdb = lmdb_data_file(path)
            if not mdb.is_file():
                raise fdata.corrupt(
                    "homology", path, f"no {mdb.name}: not an LMDB folder", "homology", data_dir
                )
            # its records are pickles: none is unpickled before the file is verified
            trust.check("homology", "homology", data_dir, mdb)
            try:
                seqs, labels = read_lmdb(path)
            except Exception as exc:  # lmdb.Error, unpickling errors, bad records
                raise fdata.corrupt(
                    "homology", path, f"{type(exc).__name__}: {exc}", "homology", data_dir
                ) from None
            if any(not 0 <= y < N_CLASSES for y in labels):
                raise fdata.corrupt(
                    "homology", path, f"fold_label outside 0..{N_CLASSES - 1}", "homology", data_dir
                )
            ids = [encode(s) for s in seqs]
            if split == "train" and self.options["overlength"] == "drop":
                keep = [i for i, t in enumerate(ids) if len(t) <= self.max_length]
                self.n_dropped = len(ids) - len(keep)
                ids, labels = [ids[i] for i in keep], [labels[i] for i in keep]
            ids = [_cut(t, self.max_length) for t in ids]
            x, lengths = pad_ids(ids, self.max_length)
            self.splits[split] = Split(x, torch.tensor(labels, dtype=torch.int64), lengths)
        self._to_device()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "train_dropped_overlength": self.n_dropped}
