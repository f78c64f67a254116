"""The CPU study's report (docs/study.md): each of the paper's claims beside the table the
pipeline rendered for it, with a verdict computed from that table's numbers.

    snakemake --cores 2 --configfile study.yaml                           # the study (~1 h)
    python -m fpt.analysis.study --configfile study.yaml --out docs/study.md
    python -m fpt.analysis.study --check docs/study.md                    # tests/test_study.py

The second command *snapshots* the run, then *renders* the document from the snapshot alone:

- snapshot: copies the tables the claims cite (`<figures_dir>/<target>.md`, byte for byte)
  and the validated config (`<figures_dir>/config.yaml`) into the sources folder
  (`docs/study/` beside `docs/study.md`), and writes `run.json` there: the grid's size, the
  machine, the software, and the measured wall time of the run (from the first training
  job's start, its benchmark file's time minus its duration, to the last table, figure or
  collected file written; or `--wall-seconds` measured by hand, e.g. with /usr/bin/time).
- render: a pure function of the claims file (`docs/study_claims.yaml`: the paper's claims,
  which table and cells each compares, the rule parameters, what would change at the
  paper's scale) and the sources folder. Without --configfile the command renders from the
  sources already there (after an edit of the claims file).

`--check` renders again from the committed sources and fails unless the document is
byte-identical, every number in it occurs in its sources (the table copies, run.json, the
config copy, the claims file) and every "mean ± half (n=k)" it quotes occurs in a table copy.

Verdicts read the cells as printed ("76.7 ± 1.2 (n=3)": mean over seeds ± the half-width of
the 95% t-interval, percentage points): see RULES. A cell without an interval (one seed, no
runs) gives "inconclusive".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HOLDS, FAILS, INCONCLUSIVE, PARTLY = (
    "holds",
    "does not hold",
    "inconclusive at this scale",
    "partly holds",
)
KINDS = ("above", "at_least", "fewer_steps")
RULES = {
    "above": (
        "A above B: holds when A's 95% interval lies entirely above B's; does not hold when it "
        "lies entirely below; inconclusive when they overlap."
    ),
    "at_least": (
        "A at least as good as B: holds when A's 95% interval lies entirely above B's, or the "
        "two overlap and both half-widths are at most {match_width} points (so a gap that size "
        "would have shown); does not hold when A's lies entirely below B's; otherwise "
        "inconclusive."
    ),
    "fewer_steps": (
        "A (pretrained) converges in fewer steps than B (random): first the final accuracies: "
        "holds when B's accuracy interval lies entirely below A's (B had not reached A's "
        "accuracy within the step budget, A had converged); does not hold when A's lies "
        "entirely below B's; when they overlap, the steps to converge decide as in 'above' "
        "(A's steps entirely below B's: holds; entirely above: does not hold; overlap: "
        "inconclusive)."
    ),
}
OVERALL = (
    "A claim holds when every comparison under it holds, does not hold when at least one "
    "does not and none holds, is inconclusive at this scale when none holds and none fails, "
    "and partly holds otherwise."
)
CELL = re.compile(r"^(?P<mean>-?\d+(?:\.\d+)?)(?: ± (?P<half>\d+(?:\.\d+)?))? \(n=(?P<n>\d+)\)")
QUOTED = re.compile(r"-?\d+(?:\.\d+)? ± \d+(?:\.\d+)? \(n=\d+\)|-?\d+(?:\.\d+)? \(n=1\)")
# A number: digits with optional decimals / version dots and exponent, not glued to a word
# on either side (so "table1_fpt" holds none; "1.5x" and "95%" hold 1.5 and 95).
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)*(?:e[+-]?\d+)?(?=x\b|[^\w]|$)")


class StudyError(ValueError):
    """A claim that cannot be evaluated (a missing table, row or column), or a bad file."""


# ---- tables as printed --------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """One printed cell: "76.7 ± 1.2 (n=3)" -> mean 76.7, half 1.2, n 3."""

    text: str
    mean: float | None = None
    half: float | None = None
    n: int = 0

    @classmethod
    def parse(cls, text: str) -> Estimate:
        m = CELL.match(text.strip())
        if not m:
            return cls(text.strip())
        half = m.group("half")
        return cls(
            text.strip(),
            float(m.group("mean")),
            None if half is None else float(half),
            int(m.group("n")),
        )

    @property
    def interval(self) -> tuple[float, float] | None:
        """(lo, hi) of the 95% interval; None without one (n < 2, no runs)."""
        if self.mean is None or self.half is None or self.n < 2:
            return None
        return self.mean - self.half, self.mean + self.half


@dataclass
class MdTable:
    """A table as fpt.analysis.render.Table.markdown writes it."""

    title: str
    header: list[str]
    rows: list[list[str]]

    @classmethod
    def parse(cls, text: str, name: str = "table") -> MdTable:
        lines = text.splitlines()
        title = next((ln[4:] for ln in lines if ln.startswith("### ")), name)
        body = [ln for ln in lines if ln.startswith("| ")]
        if not body:
            raise StudyError(f"{name}: no markdown table in it")
        header, *rows = [[c.strip() for c in ln.strip()[1:-1].split(" | ")] for ln in body]
        return cls(title, header, rows)

    def cell(self, row: str | dict[str, str], column: str, name: str = "table") -> str:
        if column not in self.header:
            raise StudyError(f"{name}: no column {column!r}; columns: {self.header}")
        want = row if isinstance(row, dict) else {self.header[0]: row}
        for col in want:
            if col not in self.header:
                raise StudyError(f"{name}: no column {col!r} to select a row by")
        idx = [self.header.index(c) for c in want]
        values = [str(v) for v in want.values()]
        hits = [r for r in self.rows if [r[i] for i in idx] == values]
        if len(hits) != 1:
            labels = [" / ".join(r[i] for i in idx) for r in self.rows]
            what = "no row" if not hits else f"{len(hits)} rows"
            raise StudyError(f"{name}: {what} with {want}; rows: {labels}")
        return hits[0][self.header.index(column)]


# ---- claims -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    row: str | dict[str, str]
    column: str


@dataclass(frozen=True)
class Comparison:
    label: str
    a: Ref
    b: Ref
    a_acc: Ref | None = None  # fewer_steps: the final accuracies
    b_acc: Ref | None = None


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    source: str
    claim: str
    table: str
    kind: str
    a_name: str
    b_name: str
    comparisons: tuple[Comparison, ...]
    scale: str


@dataclass(frozen=True)
class Claims:
    title: str
    intro: str
    match_width: float
    claims: tuple[Claim, ...]
    text: str  # the file as read (its numbers may appear in the document)
    model: str = ""  # how the tables name the backbone: "minilm l6"


def _fill(value: Any, model: str) -> Any:
    if isinstance(value, str):
        return value.replace("{model}", model)
    if isinstance(value, dict):
        return {k: _fill(v, model) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, model) for v in value]
    return value


def _row_label(row: str | dict[str, str]) -> str:
    return row if isinstance(row, str) else ", ".join(str(v) for v in row.values())


def _comparisons(c: dict[str, Any], model: str, where: str) -> tuple[Comparison, ...]:
    """A claim's comparisons: listed (`comparisons`), or one per column (`columns`, with rows
    `a` and `b`), or one per row (`rows`, with columns `a` and `b`, and `a_acc`/`b_acc`)."""
    c = _fill(c, model)
    out = []
    if "comparisons" in c:
        for i, x in enumerate(c["comparisons"]):
            try:
                refs = {
                    k: Ref(x[k]["row"], x[k]["column"])
                    for k in ("a", "b", "a_acc", "b_acc")
                    if k in x
                }
                out.append(Comparison(x["label"], **refs))
            except (KeyError, TypeError) as exc:
                raise StudyError(
                    f"{where}: comparisons[{i}] needs label, a and b with row and column ({exc})"
                ) from None
    elif "columns" in c:
        for col in c["columns"]:
            label = col.removesuffix(" (ours)")
            out.append(Comparison(label, Ref(c["a"], col), Ref(c["b"], col)))
    elif "rows" in c:
        for row in c["rows"]:
            acc = {k: Ref(row, c[k]) for k in ("a_acc", "b_acc") if k in c}
            out.append(Comparison(_row_label(row), Ref(row, c["a"]), Ref(row, c["b"]), **acc))
    if not out:
        raise StudyError(f"{where}: no comparisons (give comparisons, columns or rows)")
    return tuple(out)


def load_claims(path: str | Path) -> Claims:
    path = Path(path)
    text = path.read_text()
    data = yaml.safe_load(text)
    model = str(data.get("model", ""))
    claims = []
    for i, c in enumerate(data["claims"]):
        where = f"{path}: claims[{i}] ({c.get('id', '?')})"
        missing = {"id", "title", "source", "claim", "table", "kind", "scale"} - set(c)
        if missing:
            raise StudyError(f"{where}: missing {sorted(missing)}")
        if c["kind"] not in KINDS:
            raise StudyError(f"{where}: kind {c['kind']!r}; allowed: {', '.join(KINDS)}")
        comps = _comparisons(c, model, where)
        if c["kind"] == "fewer_steps" and any(x.a_acc is None or x.b_acc is None for x in comps):
            raise StudyError(f"{where}: fewer_steps needs a_acc and b_acc (accuracy columns)")
        claims.append(
            Claim(
                id=c["id"],
                title=c["title"],
                source=c["source"],
                claim=" ".join(c["claim"].split()),
                table=c["table"],
                kind=c["kind"],
                a_name=c.get("a_name", "A"),
                b_name=c.get("b_name", "B"),
                comparisons=comps,
                scale=" ".join(c["scale"].split()),
            )
        )
    ids = [c.id for c in claims]
    if len(ids) != len(set(ids)):
        raise StudyError(f"{path}: claim ids repeat: {ids}")
    return Claims(
        title=data.get("title", "Study"),
        intro=" ".join(str(data.get("intro", "")).split()),
        match_width=float(data.get("match_width", 5)),
        claims=tuple(claims),
        text=text,
        model=model,
    )


def cited_tables(claims: Claims) -> list[str]:
    return list(dict.fromkeys(c.table for c in claims.claims))


# ---- verdicts -----------------------------------------------------------------------------


def _order(a: tuple[float, float] | None, b: tuple[float, float] | None) -> str | None:
    """'above' when interval a lies entirely above b, 'below' when entirely below, 'overlap'
    otherwise; None when either is missing."""
    if a is None or b is None:
        return None
    if a[0] > b[1]:
        return "above"
    if a[1] < b[0]:
        return "below"
    return "overlap"


def verdict(
    kind: str,
    a: Estimate,
    b: Estimate,
    match_width: float = 5.0,
    a_acc: Estimate | None = None,
    b_acc: Estimate | None = None,
) -> tuple[str, str]:
    """(verdict, why) of one comparison by RULES[kind]."""
    if kind == "fewer_steps":
        assert a_acc is not None and b_acc is not None
        acc = _order(a_acc.interval, b_acc.interval)
        if acc is None:
            return INCONCLUSIVE, "no interval"
        if acc == "above":
            return HOLDS, "B's accuracy stays below A's"
        if acc == "below":
            return FAILS, "A's accuracy stays below B's"
        steps = _order(a.interval, b.interval)
        if steps is None:
            return INCONCLUSIVE, "no interval"
        return {
            "below": (HOLDS, "A's steps below B's"),
            "above": (FAILS, "A's steps above B's"),
            "overlap": (INCONCLUSIVE, "accuracies and steps overlap"),
        }[steps]
    order = _order(a.interval, b.interval)
    if order is None:
        return INCONCLUSIVE, "no interval"
    if order == "above":
        return HOLDS, "A above B"
    if order == "below":
        return FAILS, "A below B"
    if kind == "at_least":
        assert a.half is not None and b.half is not None
        if max(a.half, b.half) <= match_width:
            return HOLDS, "intervals overlap, both narrow"
        return INCONCLUSIVE, "intervals overlap, too wide to tell"
    return INCONCLUSIVE, "intervals overlap"


def overall(verdicts: Iterable[str]) -> str:
    v = list(verdicts)
    if v and all(x == HOLDS for x in v):
        return HOLDS
    if HOLDS not in v and FAILS in v:
        return FAILS
    if HOLDS not in v:
        return INCONCLUSIVE
    return PARTLY


# ---- snapshot: the run's tables, config and facts into the sources folder ------------------


def sources_dir(doc: str | Path) -> Path:
    doc = Path(doc)
    return doc.parent / doc.stem


def default_claims(doc: str | Path) -> Path:
    doc = Path(doc)
    return doc.parent / f"{doc.stem}_claims.yaml"


def fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m} min {s} s" if h else f"{m} min {s} s"


def measured_wall(results_dir: Path, figures_dir: Path) -> float | None:
    """Seconds from the first training job's start (its benchmark file's time minus the
    job's duration) to the last output of the run written (every table and figure, the
    collected metrics, the resource table); None without benchmarks."""
    import pandas as pd

    from fpt.analysis.targets import TARGETS

    starts = []
    for bench in sorted((results_dir / "benchmarks" / "train").rglob("*.tsv")):
        df = pd.read_csv(bench, sep="\t")
        if len(df) and "s" in df:
            starts.append(bench.stat().st_mtime - float(df["s"].iloc[-1]))
    outputs = [p for t in TARGETS.values() for p in t.outputs(figures_dir).values()]
    outputs += [results_dir / "metrics.parquet", results_dir / "benchmarks" / "train.tsv"]
    ends = [p.stat().st_mtime for p in outputs if p.exists()]
    if not starts or not ends:
        return None
    return max(ends) - min(starts)


def run_facts(
    config: dict[str, Any], config_name: str, wall_seconds: float | None = None
) -> dict[str, Any]:
    """What run.json records: the grid's size, the machine and software (from the runs'
    metrics), the measured wall time and the training jobs' summed time."""
    import pandas as pd

    from fpt import grid as fpt_grid

    results, figures = Path(config["results_dir"]), Path(config["figures_dir"])
    g = fpt_grid.expand(config)
    facts: dict[str, Any] = {
        "config": config_name,
        "label": config.get("label"),
        "runs": len(g.runs),
        "training_jobs": len(g.lone_runs()) + len(g.packs),
        "packs": len(g.packs),
        "pack_size": config.get("pack_size", 1),
        "train_threads": config.get("train_threads"),
        "seeds": sorted({s.seed for s in g.runs.values()}),
        "experiment_runs": {e: len(p) for e, p in g.experiments.items()},
        "cores": os.cpu_count(),
    }
    metrics = results / "metrics.parquet"
    if metrics.exists():
        cols = [
            "run",
            "device",
            "device_name",
            "torch_version",
            "transformers_version",
            "python_version",
            "git_rev",
        ]
        df = pd.read_parquet(metrics, columns=cols)
        facts["finished_runs"] = int(df["run"].nunique())
        for col in cols[1:]:
            facts[col] = sorted({str(v) for v in df[col].dropna()})
    bench = results / "benchmarks" / "train.tsv"
    if bench.exists():
        job_s = float(pd.read_csv(bench, sep="\t")["s"].sum())
        facts["train_job_seconds"] = round(job_s)
        facts["train_job_time"] = fmt_duration(job_s)
    if wall_seconds is None:
        wall_seconds = measured_wall(results, figures)
        source = "from the files' times: the first training job's start to the last output written"
    else:
        source = "given (--wall-seconds)"
    if wall_seconds is not None:
        facts["wall_seconds"] = round(wall_seconds)
        facts["wall_time"] = fmt_duration(wall_seconds)
        facts["wall_source"] = source
    return facts


def snapshot(
    config: dict[str, Any],
    config_name: str,
    claims: Claims,
    sources: Path,
    wall_seconds: float | None = None,
) -> None:
    """Copy the cited tables and the config snapshot from the config's figures_dir into
    `sources`, and write run.json there."""
    from fpt import files

    figures = Path(config["figures_dir"])
    tables = cited_tables(claims)
    missing = [t for t in tables if not (figures / f"{t}.md").exists()]
    if missing:
        raise StudyError(
            f"{figures}: no {', '.join(f'{t}.md' for t in missing)}. Run the study first: "
            f"snakemake --cores 2 --configfile {config_name}"
        )
    sources.mkdir(parents=True, exist_ok=True)
    for t in tables:
        shutil.copyfile(figures / f"{t}.md", sources / f"{t}.md")
    snap = figures / "config.yaml"
    if snap.exists():
        shutil.copyfile(snap, sources / "config.yaml")
    else:  # the validated config as rule config_snapshot writes it
        files.write_text(sources / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))
    facts = run_facts(config, config_name, wall_seconds)
    files.write_text(sources / "run.json", json.dumps(facts, indent=1, sort_keys=True) + "\n")


# ---- render: the document from the claims and the sources alone ----------------------------


@dataclass
class Sources:
    tables: dict[str, str]  # target -> its markdown as copied
    config: dict[str, Any]
    facts: dict[str, Any]
    folder: Path

    @classmethod
    def load(cls, folder: str | Path, tables: Iterable[str]) -> Sources:
        folder = Path(folder)
        missing = [t for t in tables if not (folder / f"{t}.md").exists()]
        for f in ("run.json", "config.yaml"):
            if not (folder / f).exists():
                missing.append(f)
        if missing:
            raise StudyError(
                f"{folder}: missing {', '.join(missing)} (run the snapshot: "
                "python -m fpt.analysis.study --configfile study.yaml)"
            )
        return cls(
            {t: (folder / f"{t}.md").read_text() for t in tables},
            yaml.safe_load((folder / "config.yaml").read_text()),
            json.loads((folder / "run.json").read_text()),
            folder,
        )


def _cell(table: MdTable, ref: Ref, name: str, model: str) -> str:
    """The cell `ref` of `table`. A compare table names a row by its backbone only where the
    row has runs ("FPT (minilm l6)"); a row without any says "not in <label>" under its bare
    label, and so does its cell here (its comparisons are then inconclusive)."""
    try:
        return table.cell(ref.row, ref.column, name)
    except StudyError:
        suffix = f" ({model})"
        if not (model and isinstance(ref.row, str) and ref.row.endswith(suffix)):
            raise
        return table.cell(ref.row.removesuffix(suffix), ref.column, name)


def _cells(claim: Claim, table: MdTable, c: Comparison, model: str) -> dict[str, Estimate]:
    out = {}
    for key in ("a", "b", "a_acc", "b_acc"):
        ref = getattr(c, key)
        if ref is not None:
            out[key] = Estimate.parse(_cell(table, ref, claim.table, model))
    return out


def evaluate(
    claim: Claim, table: MdTable, match_width: float, model: str = ""
) -> list[dict[str, Any]]:
    """Each comparison of `claim` with its cells and verdict."""
    out = []
    for c in claim.comparisons:
        cells = _cells(claim, table, c, model)
        v, why = verdict(
            claim.kind, cells["a"], cells["b"], match_width, cells.get("a_acc"), cells.get("b_acc")
        )
        out.append({"comparison": c, "cells": cells, "verdict": v, "why": why})
    return out


def _flow(value: Any) -> str:
    """A setting as YAML's flow style writes it: {cache_features: true}, 0.001."""
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)


def _design(config: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    out = ["| task | steps | batch | evaluated every | task options |", "|---|---|---|---|---|"]
    defaults = config.get("defaults", {})
    for task, s in (config.get("tasks") or {}).items():
        opts = ", ".join(f"{k}: {_flow(v)}" for k, v in (s.get("options") or {}).items())
        batch = s.get("batch_size", defaults.get("batch_size", "—"))
        out.append(
            f"| {task} | {s.get('steps', '—')} | {batch} | {s.get('eval_every', '—')} | {opts} |"
        )
    out += ["", "| experiment | runs | settings | what it tests |", "|---|---|---|---|"]
    runs = facts.get("experiment_runs", {})
    for name, exp in (config.get("experiments") or {}).items():
        settings = dict(exp.get("settings") or {})
        if exp.get("protocol") == "swept":
            sweep = exp.get("sweep") or {}
            settings["lrs"] = ", ".join(str(x) for x in sweep.get("lrs", []))
            settings["patience"] = sweep.get("patience")
        text = "; ".join(f"{k}: {_flow(v)}" for k, v in settings.items()) or "the tasks' own"
        desc = " ".join(str(exp.get("description", "")).split())
        out.append(f"| {name} | {runs.get(name, '—')} | {text} | {desc} |")
    return out


def _facts(facts: dict[str, Any]) -> list[str]:
    def one(key: str) -> str:
        v = facts.get(key)
        return ", ".join(map(str, v)) if isinstance(v, list) else str(v)

    wall = (
        f"**{facts['wall_time']}** ({facts['wall_source']})"
        if "wall_time" in facts
        else "not measured (no benchmark files)"
    )
    lines = [
        f"- Config: `{facts['config']}` (label {facts.get('label')}): {facts['runs']} runs in "
        f"{facts['training_jobs']} training jobs ({facts['packs']} fused packs of up to "
        f"{facts['pack_size']} runs), seeds {one('seeds')}, {facts['train_threads']} thread(s) "
        "per job.",
        f"- Wall time of the run: {wall}.",
    ]
    if "train_job_time" in facts:
        lines.append(
            f"- Training jobs' time, summed over both job slots: {facts['train_job_time']}."
        )
    if "device_name" in facts:
        lines.append(
            f"- Machine: {one('device_name')} ({one('device')}; {facts['cores']} cores where this "
            f"report was generated); torch "
            f"{one('torch_version')}, transformers {one('transformers_version')}, Python "
            f"{one('python_version')}; fpt {one('git_rev')}; {facts.get('finished_runs')} runs "
            "finished."
        )
    return lines


def _heading_anchor(title: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")
    return f"#{slug}"


def render(claims: Claims, src: Sources) -> str:
    """docs/study.md from the claims and the snapshot."""
    tables = {t: MdTable.parse(src.tables[t], t) for t in cited_tables(claims)}
    results = {
        c.id: evaluate(c, tables[c.table], claims.match_width, claims.model) for c in claims.claims
    }
    lines = [f"# {claims.title}", ""]
    if claims.intro:
        lines += [claims.intro, ""]
    lines += [
        "Generated from the run's own tables; do not edit by hand. To regenerate after "
        "running the study: `snakemake --cores 2 --configfile study.yaml`, then "
        "`python -m fpt.analysis.study --configfile study.yaml --out docs/study.md`. The claims, "
        "the cells each compares and the notes on scale live in `docs/study_claims.yaml`; the "
        "copies of the tables quoted here, the config and the run's facts in `docs/study/`. "
        "`python -m fpt.analysis.study --check docs/study.md` (run by tests/test_study.py) "
        "checks that this file is what those copies give and that every number in it occurs in "
        "them.",
        "",
        "## The run",
        "",
        *_facts(src.facts),
        "",
        "### Design (from the config)",
        "",
        *_design(src.config, src.facts),
        "",
        "## How to read the verdicts",
        "",
        "Cells are our test accuracy (%) at each run's final evaluation, mean over seeds ± the "
        "half-width of the 95% t-interval, with n = seeds, exactly as the tables print them "
        "(steps to converge likewise, in steps). Each claim compares cells A and B of its "
        "table, one comparison per task or setting, by one rule:",
        "",
        *(f"- `{k}`: {RULES[k].format(match_width=f'{claims.match_width:g}')}" for k in KINDS),
        "",
        f"{OVERALL} A cell without an interval (one seed, no runs) makes its comparison "
        "inconclusive.",
        "",
        "## Summary",
        "",
        "| claim | table | verdict |",
        "|---|---|---|",
    ]
    for c in claims.claims:
        v = overall(r["verdict"] for r in results[c.id])
        lines.append(f"| [{c.title}]({_heading_anchor(c.title)}) | `{c.table}` | {v} |")
    shown: dict[str, str] = {}
    for c in claims.claims:
        rows = results[c.id]
        v = overall(r["verdict"] for r in rows)
        lines += [
            "",
            f"## {c.title}",
            "",
            f"**Claim** ({c.source}): {c.claim}",
            "",
            f"**Verdict: {v}** (rule `{c.kind}`; A = {c.a_name}, B = {c.b_name}).",
            "",
        ]
        for r in rows:
            cells = r["cells"]
            what = f"A {cells['a'].text} vs B {cells['b'].text}"
            if c.kind == "fewer_steps":
                what = (
                    f"steps A {cells['a'].text} vs B {cells['b'].text}; accuracy A "
                    f"{cells['a_acc'].text} vs B {cells['b_acc'].text}"
                )
            lines.append(f"- {r['comparison'].label}: {what}: **{r['verdict']}** ({r['why']}).")
        lines.append("")
        if c.table in shown:
            lines.append(
                f"Our table: `{c.table}`, shown under [{shown[c.table]}]"
                f"({_heading_anchor(shown[c.table])}) above."
            )
        else:
            shown[c.table] = c.title
            lines += [
                f"Our table, `{c.table}` (copied verbatim from the run: "
                f"`docs/study/{c.table}.md`):",
                "",
                src.tables[c.table].rstrip("\n"),
            ]
        lines += ["", f"**At the paper's scale:** {c.scale}"]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---- the check ----------------------------------------------------------------------------


def numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text))


def check(doc: str | Path, claims_path: str | Path | None = None) -> list[str]:
    """What is wrong with `doc` (empty: nothing): not what its sources give, a number that
    occurs in none of its sources, a quoted cell that occurs in no table copy."""
    doc = Path(doc)
    claims = load_claims(claims_path or default_claims(doc))
    src = Sources.load(sources_dir(doc), cited_tables(claims))
    text = doc.read_text()
    problems = []
    if render(claims, src) != text:
        problems.append(
            f"{doc} is not what {sources_dir(doc)} and the claims file give (edited by hand, or "
            f"stale): regenerate it with python -m fpt.analysis.study --out {doc}"
        )
    source_text = [
        *src.tables.values(),
        claims.text,
        (src.folder / "run.json").read_text(),
        (src.folder / "config.yaml").read_text(),
    ]
    allowed = set().union(*(numbers(t) for t in source_text))
    stray = sorted(numbers(text) - allowed)
    if stray:
        problems.append(f"{doc}: numbers in none of its sources: {', '.join(stray)}")
    table_text = "\n".join(src.tables.values())
    for q in sorted(set(QUOTED.findall(text))):
        if q not in table_text:
            problems.append(f"{doc}: the cell {q!r} is in no table copy")
    return problems


# ---- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fpt.analysis.study",
        description="Write (or --check) the study report, docs/study.md, from the study's tables.",
    )
    p.add_argument("--configfile", help="snapshot this config's run first (e.g. study.yaml)")
    p.add_argument("--out", default="docs/study.md", help="the document (default docs/study.md)")
    p.add_argument("--claims", help="claims file (default: <out stem>_claims.yaml beside it)")
    p.add_argument(
        "--wall-seconds",
        type=float,
        help="the study's wall time measured by hand (default: from the files' times)",
    )
    p.add_argument("--check", metavar="DOC", help="check DOC against its sources instead")
    args = p.parse_args(argv)
    try:
        if args.check:
            problems = check(args.check, args.claims)
            for msg in problems:
                print(msg, file=sys.stderr)
            if not problems:
                print(f"{args.check}: consistent with its sources")
            return 1 if problems else 0
        from fpt import files

        out = Path(args.out)
        claims = load_claims(args.claims or default_claims(out))
        if args.configfile:
            from fpt.grid import ConfigError, load_config

            try:
                config = load_config(args.configfile)
            except ConfigError as exc:
                raise StudyError(str(exc)) from None
            snapshot(config, args.configfile, claims, sources_dir(out), args.wall_seconds)
        src = Sources.load(sources_dir(out), cited_tables(claims))
        files.write_text(out, render(claims, src))
        print(f"wrote {out} (sources: {sources_dir(out)})")
        return 0
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
