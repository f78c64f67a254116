"""The CPU study's report (docs/study.md): each of the paper's claims, the cells of the
pipeline's tables it compares, and a verdict computed from their 95% intervals.

    snakemake --cores 2 --configfile study.yaml                           # the study (~1 h)
    python -m fpt.analysis.study --configfile study.yaml --out docs/study.md
    python -m fpt.analysis.study --check docs/study.md

With --configfile it first snapshots the run into `docs/study/`: the CSV of each table the claims
cite (`<figures_dir>/<target>.csv`), the config, and run.json (grid size, machine, software, the
fpt commit of the runs, wall time). It renders the document from the claims file
(`docs/study_claims.yaml`) and that folder alone; --check fails unless the document is that.
A cell is a row of a table's CSV named by some of its columns' values (`{row: FPT, task:
bit_xor}`), the claims' `model` (backbone, size) and a measure (MEASURES; accuracy unless named).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from fpt.analysis.render import fmt_duration
from fpt.analysis.stats import Cell
from fpt.grid import ConfigError, expand, load_config
from fpt.tasks import task_label

HOLDS, FAILS = "holds", "does not hold"
INCONCLUSIVE, PARTLY = "inconclusive at this scale", "partly holds"
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
    "and partly holds otherwise. A cell without an interval (one seed, no runs) makes its "
    "comparison inconclusive."
)
# measure -> its CSV columns (mean, half-width of the 95% t-interval, n) and how the tables
# print it (scale, decimals): accuracies are fractions printed in %, steps are steps.
MEASURES = {
    "accuracy": ("accuracy_mean", "ci95", "n", 100.0, 1),
    "fpt_steps": ("fpt_steps", "fpt_steps_ci95", "fpt_n", 1.0, 0),
    "random_steps": ("random_steps", "random_steps_ci95", "random_n", 1.0, 0),
    "fpt_accuracy": ("fpt_accuracy", "fpt_accuracy_ci95", "fpt_accuracy_n", 100.0, 1),
    "random_accuracy": ("random_accuracy", "random_accuracy_ci95", "random_accuracy_n", 100.0, 1),
}
MARKS = ("diverged", "collapsed")  # how many of a cell's runs did, where a CSV records it
SIDES = ("a", "b", "a_acc", "b_acc")  # a_acc, b_acc: fewer_steps' final accuracies


class StudyError(ValueError):
    """A claim that cannot be evaluated (a missing table or column), or a bad file."""


class Estimate(NamedTuple):
    """One cell as the table prints it ("76.7 ± 1.2 (n=3)"), its numbers in those units."""

    text: str
    mean: float | None = None
    half: float | None = None
    n: int = 0

    @property
    def interval(self) -> tuple[float, float] | None:
        """(lo, hi) of the 95% interval; None without one (n < 2, no runs)."""
        if self.mean is None or self.half is None or self.n < 2:
            return None
        return self.mean - self.half, self.mean + self.half


class CsvTable(NamedTuple):
    name: str
    columns: list[str]
    rows: list[dict[str, str]]

    @classmethod
    def read(cls, path: Path) -> CsvTable:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            return cls(path.stem, list(reader.fieldnames or []), list(reader))

    def estimate(self, address: dict[str, Any], model: dict[str, Any], missing: str) -> Estimate:
        """The cell at `address` (column -> value, and `measure`) for `model`'s backbone."""
        where = {k: str(v) for k, v in address.items() if k != "measure"}
        if (measure := address.get("measure", "accuracy")) not in MEASURES:
            raise StudyError(f"{self.name}: measure {measure!r}; known: {', '.join(MEASURES)}")
        mean_col, ci_col, n_col, scale, digits = MEASURES[measure]
        if unknown := [c for c in [*where, mean_col, ci_col, n_col] if c not in self.columns]:
            raise StudyError(f"{self.name}.csv has no column {', '.join(unknown)}")
        if "variant" in self.columns:
            where.setdefault("variant", "")  # the row itself, not one of other settings
        where |= {k: str(v) for k, v in model.items() if k in self.columns and k not in where}
        hits = [r for r in self.rows if all(r[k] == v for k, v in where.items())]
        if len(hits) > 1:
            raise StudyError(f"{self.name}: {len(hits)} rows with {where}; name more columns")
        if not hits or not (n := int(float(hits[0][n_col] or 0))):
            return Estimate(missing)
        r = hits[0]
        half = float(r[ci_col]) if r[ci_col] not in ("", "nan") else None
        c = Cell(float(r[mean_col]), half, n, *(int(float(r.get(k) or 0)) for k in MARKS))
        return Estimate(c.fmt(scale, digits), c.mean * scale, half and half * scale, n)


class Claims(NamedTuple):
    title: str
    intro: str
    match_width: float  # at_least: "the same" needs both half-widths at most this (points)
    model: dict[str, Any]  # the backbone's columns in the tables: {backbone: minilm, size: l6}
    claims: list[dict[str, Any]]  # as the file has them, each with its `comparisons` listed

    @property
    def tables(self) -> list[str]:
        return list(dict.fromkeys(c["table"] for c in self.claims))


def _comparisons(c: dict[str, Any]) -> list[dict[str, Any]]:
    """Listed (`comparisons`: a label, a and b each), or one per value of `each` ({column:
    [values]}) with the claim's own a and b (and a_acc, b_acc)."""
    if "comparisons" in c:
        return [{k: x[k] for k in ("label", *SIDES) if k in x} for x in c["comparisons"]]
    ((key, values),) = c["each"].items()
    label = task_label if key == "task" else str
    return [{"label": label(v)} | {k: {**c[k], key: v} for k in SIDES if k in c} for v in values]


def load_claims(path: str | Path) -> Claims:
    data = yaml.safe_load(Path(path).read_text())
    text = ("id", "title", "source", "claim", "table", "kind", "scale")
    claims = []
    for i, c in enumerate(data["claims"]):
        where = f"{path}: claims[{i}] ({c.get('id', '?')})"
        if missing := [k for k in text if k not in c]:
            raise StudyError(f"{where}: missing {missing}")
        if c["kind"] not in RULES:
            raise StudyError(f"{where}: kind {c['kind']!r}; allowed: {', '.join(RULES)}")
        try:
            comps = _comparisons(c)
        except (KeyError, TypeError, ValueError) as exc:
            raise StudyError(f"{where}: give comparisons (label, a, b) or each ({exc!r})") from None
        need = ["a", "b"] + ["a_acc", "b_acc"] * (c["kind"] == "fewer_steps")
        if not comps or any(k not in x for x in comps for k in need):
            raise StudyError(f"{where}: each comparison needs {', '.join(need)}")
        words = {k: " ".join(str(c[k]).split()) for k in text}
        claims.append({"a_name": "A", "b_name": "B"} | c | words | {"comparisons": comps})
    if len({c["id"] for c in claims}) < len(claims):
        raise StudyError(f"{path}: claim ids repeat")
    intro = " ".join(str(data.get("intro", "")).split())
    match_width = float(data.get("match_width", 5))
    return Claims(data.get("title", "Study"), intro, match_width, data.get("model") or {}, claims)


def _order(a: tuple[float, float] | None, b: tuple[float, float] | None) -> str | None:
    """'above' when interval a lies entirely above b, 'below' when entirely below, 'overlap'
    otherwise; None when either is missing."""
    if a is None or b is None:
        return None
    return "above" if a[0] > b[1] else "below" if a[1] < b[0] else "overlap"


NO_INTERVAL = (INCONCLUSIVE, "no interval")
READ = {  # what an ordering of two intervals says, per rule (and stage of fewer_steps)
    "above": {"above": (HOLDS, "A above B"), "below": (FAILS, "A below B")},
    "accuracy": {
        "above": (HOLDS, "B's accuracy stays below A's"),
        "below": (FAILS, "A's accuracy stays below B's"),
    },
    "steps": {
        "below": (HOLDS, "A's steps below B's"),
        "above": (FAILS, "A's steps above B's"),
        "overlap": (INCONCLUSIVE, "accuracies and steps overlap"),
    },
}


def verdict(
    kind: str, a: Estimate, b: Estimate, a_acc: Estimate | None = None,
    b_acc: Estimate | None = None, *, match_width: float = 5.0,
) -> tuple[str, str]:  # fmt: skip
    """(verdict, why) of one comparison by RULES[kind]; a_acc, b_acc: fewer_steps' accuracies."""
    if kind == "fewer_steps":
        assert a_acc is not None and b_acc is not None
        if (acc := _order(a_acc.interval, b_acc.interval)) != "overlap":
            return READ["accuracy"].get(acc, NO_INTERVAL)
        return READ["steps"].get(_order(a.interval, b.interval), NO_INTERVAL)
    if (order := _order(a.interval, b.interval)) != "overlap":
        return READ["above"].get(order, NO_INTERVAL)
    if kind == "at_least" and max(a.half, b.half) <= match_width:
        return HOLDS, "intervals overlap, both narrow"
    if kind == "at_least":
        return INCONCLUSIVE, "intervals overlap, too wide to tell"
    return INCONCLUSIVE, "intervals overlap"


def overall(verdicts: list[str]) -> str:
    if verdicts and all(x == HOLDS for x in verdicts):
        return HOLDS
    if HOLDS not in verdicts:
        return FAILS if FAILS in verdicts else INCONCLUSIVE
    return PARTLY


def evaluate(claim: dict[str, Any], table: CsvTable, claims: Claims, missing: str) -> list[dict]:
    """Each comparison of `claim` with its cells and verdict."""
    out = []
    for c in claim["comparisons"]:
        cells = {k: table.estimate(c[k], claims.model, missing) for k in SIDES if k in c}
        v, why = verdict(claim["kind"], *cells.values(), match_width=claims.match_width)
        out.append({"label": c["label"], "cells": cells, "verdict": v, "why": why})
    return out


def sources_dir(doc: str | Path) -> Path:
    return Path(doc).parent / Path(doc).stem


def run_facts(config: dict, config_name: str, report: str, wall: float | None = None) -> dict:
    """What run.json records: the grid's size; the machine, software and commit (from the runs'
    metrics); the training jobs' summed time; the wall time: `wall`, or from the first training
    job's start (its benchmark file's time less its duration) to the last output written."""
    import pandas as pd

    from fpt.analysis.targets import TARGETS

    results, figures = Path(config["results_dir"]), Path(config["figures_dir"])
    g = expand(config)
    facts: dict[str, Any] = {"config": config_name, "report": report, "cores": os.cpu_count()}
    facts |= {k: config.get(k) for k in ("label", "pack_size", "train_threads")}
    facts |= {"runs": len(g.runs), "packs": len(g.packs)}
    facts["training_jobs"] = len(g.lone_runs()) + len(g.packs)
    facts["seeds"] = sorted({s.seed for s in g.runs.values()})
    facts["experiment_runs"] = {e: len(p) for e, p in g.experiments.items()}
    if (metrics := results / "metrics.parquet").exists():
        cols = ["device", "device_name", "torch_version", "transformers_version"]
        df = pd.read_parquet(metrics, columns=["run", *cols, "python_version", "git_rev"])
        facts["finished_runs"] = int(df["run"].nunique())
        facts |= {c: sorted({str(v) for v in df[c].dropna()}) for c in df.columns[1:]}
    if (bench := results / "benchmarks" / "train.tsv").exists():
        job_s = float(pd.read_csv(bench, sep="\t")["s"].sum())
        facts |= {"train_job_seconds": round(job_s), "train_job_time": fmt_duration(job_s, True)}
    source = "given (--wall-seconds)"
    if wall is None:
        source = "from the files' times: the first training job's start to the last output written"
        starts = []
        for job in sorted((results / "benchmarks" / "train").rglob("*.tsv")):
            if len(df := pd.read_csv(job, sep="\t")) and "s" in df:
                starts.append(job.stat().st_mtime - float(df["s"].iloc[-1]))
        outputs = [p for t in TARGETS.values() for p in t.outputs(figures).values()]
        ends = [p.stat().st_mtime for p in [*outputs, metrics, bench] if p.exists()]
        wall = max(ends) - min(starts) if starts and ends else None
    if wall is not None:
        facts |= {"wall_seconds": round(wall), "wall_time": fmt_duration(wall, exact=True)}
        facts["wall_source"] = source
    return facts


def snapshot(config: dict, config_name: str, claims: Claims, doc: str | Path, wall=None) -> None:
    """Copy the cited tables' CSVs and the config snapshot from the config's figures_dir into
    the sources folder of `doc`, and write run.json there."""
    from fpt import files

    figures, sources = Path(config["figures_dir"]), sources_dir(doc)
    if missing := [f"{t}.csv" for t in claims.tables if not (figures / f"{t}.csv").exists()]:
        raise StudyError(
            f"{figures}: no {', '.join(missing)}. Run the study first: "
            f"snakemake --cores all --configfile {config_name}"
        )
    sources.mkdir(parents=True, exist_ok=True)
    for t in claims.tables:
        shutil.copyfile(figures / f"{t}.csv", sources / f"{t}.csv")
    if (figures / "config.yaml").exists():
        shutil.copyfile(figures / "config.yaml", sources / "config.yaml")
    else:  # the validated config as rule config_snapshot writes it
        files.write_text(sources / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False))
    facts = run_facts(config, config_name, str(doc), wall)
    files.write_text(sources / "run.json", json.dumps(facts, indent=1, sort_keys=True) + "\n")


def _flow(value: Any) -> str:
    """A setting as YAML's flow style writes it: {cache_features: true}, 0.001."""
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)


def _design(config: dict[str, Any], facts: dict[str, Any]) -> str:
    out = ["| task | steps | batch | evaluated every | task options |", "|---|---|---|---|---|"]
    batch = config.get("defaults", {}).get("batch_size", "—")
    for task, s in (config.get("tasks") or {}).items():
        opts = ", ".join(f"{k}: {_flow(v)}" for k, v in (s.get("options") or {}).items())
        cells = [task, s.get("steps", "—"), s.get("batch_size", batch), s.get("eval_every", "—")]
        out.append("| " + " | ".join(map(str, [*cells, opts])) + " |")
    out += ["", "| experiment | runs | settings | what it tests |", "|---|---|---|---|"]
    for name, exp in (config.get("experiments") or {}).items():
        settings = dict(exp.get("settings") or {})
        if exp.get("protocol") == "swept":
            sweep = exp.get("sweep") or {}
            settings["lrs"] = ", ".join(str(x) for x in sweep.get("lrs", []))
            settings["patience"] = sweep.get("patience")
        text = "; ".join(f"{k}: {_flow(v)}" for k, v in settings.items()) or "the tasks' own"
        desc = " ".join(str(exp.get("description", "")).split())
        runs = facts.get("experiment_runs", {}).get(name, "—")
        out.append(f"| {name} | {runs} | {text} | {desc} |")
    return "\n".join(out)


def _facts(f: dict[str, Any]) -> str:
    def one(key: str) -> str:
        return ", ".join(map(str, f[key])) if isinstance(f[key], list) else str(f[key])

    threads = f.get("train_threads") or 1
    packs = f" ({f['packs']} fused packs of up to {f['pack_size']} runs)" if f["packs"] else ""
    wall = f"**{f['wall_time']}** ({f['wall_source']})" if "wall_time" in f else "not measured"
    out = [
        f"- Config: `{f['config']}` (label {f['label']}): {f['runs']} runs in "
        f"{f['training_jobs']} training jobs{packs}, seeds {one('seeds')}, {threads} "
        f"thread{'s' * (threads != 1)} per job.",
        f"- Wall time of the run: {wall}.",
    ]
    if "train_job_time" in f:
        out.append(f"- Training jobs' time, summed over the jobs: {f['train_job_time']}.")
    if "git_rev" in f:
        out.append(f"- Code: the runs were made with fpt at commit {one('git_rev')}.")
    if "device_name" in f:
        out.append(
            f"- Machine: {one('device_name')} ({one('device')}; {f['cores']} cores where this "
            f"report was generated); torch {one('torch_version')}, transformers "
            f"{one('transformers_version')}, Python {one('python_version')}; "
            f"{f['finished_runs']} runs finished."
        )
    return "\n".join(out)


def _anchor(title: str) -> str:
    return "#" + re.sub(r"[^\w\- ]", "", title.lower()).strip().replace(" ", "-")


def render(claims: Claims, sources: str | Path) -> str:
    """The document from the claims and the sources folder (`snapshot`) alone."""
    folder = Path(sources)
    need = [f"{t}.csv" for t in claims.tables] + ["run.json", "config.yaml"]
    if missing := [x for x in need if not (folder / x).exists()]:
        raise StudyError(f"{folder}: missing {', '.join(missing)} (snapshot a run first)")
    tables = {t: CsvTable.read(folder / f"{t}.csv") for t in claims.tables}
    config = yaml.safe_load((folder / "config.yaml").read_text())
    f = json.loads((folder / "run.json").read_text())
    cs, missing_text = claims.claims, f"not in {f.get('label') or 'config'}"
    results = {c["id"]: evaluate(c, tables[c["table"]], claims, missing_text) for c in cs}
    verdicts = {k: overall([r["verdict"] for r in rs]) for k, rs in results.items()}
    summary = [
        f"| [{c['title']}]({_anchor(c['title'])}) | `{c['table']}` | {verdicts[c['id']]} |"
        for c in cs
    ]
    name, report, width = f["config"], f.get("report", "<this file>"), f"{claims.match_width:g}"
    blocks = [
        f"# {claims.title}",
        claims.intro,
        "Generated from the run's tables; do not edit by hand. To regenerate after running "
        f"the study: `snakemake --cores {f.get('cores', 'all')} --configfile {name}`, then "
        f"`python -m fpt.analysis.study --configfile {name} --out {report}`. The claims, the "
        f"cells each compares and the notes on scale are in `{Path(report).stem}_claims.yaml` "
        "beside this file; the copies of the cited tables' CSVs, the config and the run's facts "
        f"in `{folder.name}/` beside it. `python -m fpt.analysis.study --check {report}` checks "
        "that this file is what they render to.",
        "## The run",
        _facts(f),
        "### Design (from the config)",
        _design(config, f),
        "## How to read the verdicts",
        "Cells are our test accuracy (%) at each run's final evaluation, mean over seeds ± the "
        "half-width of the 95% t-interval, with n = seeds, as the tables print them (steps to "
        "converge likewise, in steps). Each claim compares cells A and B of its table, one "
        "comparison per task or setting, by one rule:",
        "\n".join(f"- `{k}`: {rule.format(match_width=width)}" for k, rule in RULES.items()),
        OVERALL,
        "## Summary",
        "\n".join(["| claim | table | verdict |", "|---|---|---|", *summary]),
    ]
    for c in cs:
        comparisons = []
        for r in results[c["id"]]:
            cell = {k: e.text for k, e in r["cells"].items()}
            what = f"A {cell['a']} vs B {cell['b']}"
            if c["kind"] == "fewer_steps":
                what = f"steps {what}; accuracy A {cell['a_acc']} vs B {cell['b_acc']}"
            comparisons.append(f"- {r['label']}: {what}: **{r['verdict']}** ({r['why']}).")
        copy = f"{folder.name}/{c['table']}.csv"
        blocks += [
            f"## {c['title']}",
            f"**Claim** ({c['source']}): {c['claim']}",
            f"**Verdict: {verdicts[c['id']]}** (rule `{c['kind']}`; A = {c['a_name']}, B = "
            f"{c['b_name']}).",
            "\n".join(comparisons),
            f"Cells from the run's table `{c['table']}` (in full: `{config.get('figures_dir')}/"
            f"{c['table']}.md`; as copied here: [`{copy}`]({copy})).",
            f"**At the paper's scale:** {c['scale']}",
        ]
    return "\n\n".join(b for b in blocks if b) + "\n"


def check(doc: str | Path, claims: str | Path | None = None) -> str | None:
    """None when `doc` is what its sources render to; else what is wrong."""
    text = render(load_claims(claims or default_claims(doc)), sources_dir(doc))
    if text == Path(doc).read_text():
        return None
    return f"{doc} is not what its sources render to: regenerate it (--out {doc}), not by hand"


def default_claims(doc: str | Path) -> Path:
    return Path(doc).parent / f"{Path(doc).stem}_claims.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fpt.analysis.study",
        description="Write (or --check) the study report, docs/study.md, from the study's tables.",
    )
    p.add_argument("--configfile", help="snapshot this config's run first (e.g. study.yaml)")
    p.add_argument("--out", default="docs/study.md", help="the document (default docs/study.md)")
    p.add_argument("--claims", help="claims file (default: <out stem>_claims.yaml beside it)")
    p.add_argument("--wall-seconds", type=float, help="the run's wall time measured by hand")
    p.add_argument("--check", metavar="DOC", help="check that DOC is what its sources render to")
    args = p.parse_args(argv)
    try:
        if args.check:
            problem = check(args.check, args.claims)
            print(problem or f"{args.check}: what its sources render to", file=sys.stderr)
            return 1 if problem else 0
        from fpt import files

        claims = load_claims(args.claims or default_claims(args.out))
        if args.configfile:
            config = load_config(args.configfile)
            snapshot(config, args.configfile, claims, args.out, args.wall_seconds)
        files.write_text(args.out, render(claims, sources_dir(args.out)))
        print(f"wrote {args.out} (sources: {sources_dir(args.out)})")
        return 0
    except (StudyError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
