"""`fpt status`: the runs under a results folder, as they stand now, without Snakemake.

A run folder (`<results>/runs/<run>/`) is
- **finished** when it holds metrics.parquet (written atomically, last, by `fpt train`);
- **in progress** otherwise, when it holds progress.parquet (the rows so far, rewritten
  after every evaluation; `fpt train` removes it once metrics.parquet is written), a
  checkpoint/ or spec.json (a run that has started but not evaluated yet, or one started
  by an fpt that wrote no progress file). In progress means "started and not finished":
  the job may be running, queued for a retry, or dead; the age of the last write tells;
- **pending** (with a config only) when the config's grid names it and its folder has none
  of those.

metrics.parquet decides: a folder holding it is finished whatever else it holds, so no run
is counted twice. A file that cannot be read (truncated, not Parquet, wrong schema) is
reported as unreadable with the reader's error, never a crash.
"""

from __future__ import annotations

import collections
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fpt.metrics import PROGRESS  # progress.parquet, written by fpt.train

METRICS = "metrics.parquet"

# Snakemake's SLURM plugin names every job by its run-uuid; this is how to find a job's run.
SLURM_MAP_HINT = (
    "map a job to its run: its SLURM log is "
    ".snakemake/slurm_logs/rule_train/<run, '/' as '_'>/<jobid>.log, and its comment "
    "(squeue --me -o '%i %T %k') is rule_train_wildcards_<run, '/' as '_'>"
)


def _reported_split(task: str | None) -> str:
    from fpt.tasks import reported_split

    return reported_split(task)


def _num(v: Any) -> Any:
    """A JSON-able Python scalar (None for NaN/NA)."""
    if v is None:
        return None
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _spec(run_dir: Path) -> dict[str, Any]:
    try:
        spec = json.loads((run_dir / "spec.json").read_text())
        return spec if isinstance(spec, dict) else {}
    except (OSError, ValueError):
        return {}


def _last_write(run_dir: Path) -> float | None:
    """mtime of the newest of progress.parquet, the checkpoint and spec.json."""
    times = []
    for p in (run_dir / PROGRESS, run_dir / "checkpoint" / "ckpt.pt", run_dir / "spec.json"):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return max(times) if times else None


def run_dirs(results: Path) -> dict[str, Path]:
    """Run path -> folder, for every folder under `results`/runs that holds metrics.parquet,
    progress.parquet, checkpoint/ or spec.json."""
    root = results / "runs"
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        if {METRICS, PROGRESS, "spec.json"} & set(filenames) or "checkpoint" in dirnames:
            d = Path(dirpath)
            found[d.relative_to(root).as_posix()] = d
            dirnames[:] = []  # a run folder holds no other run
        else:
            dirnames.sort()
    return dict(sorted(found.items()))


def _in_progress(run: str, run_dir: Path, now: float) -> dict[str, Any]:
    spec = _spec(run_dir)
    split = _reported_split(spec.get("task") or _task_of(run))
    last = _last_write(run_dir)
    out: dict[str, Any] = {
        "run": run,
        "state": "in_progress",
        "step": None,
        "steps": spec.get("steps"),
        "split": split,
        "accuracy": None,
        "steps_per_s": None,
        "eta_s": None,
        "last_write_age_s": None if last is None else round(max(0.0, now - last), 1),
        "evaluations": 0,
        "unreadable": None,
        "note": None,
    }
    path = run_dir / PROGRESS
    if not path.exists():
        out["note"] = (
            "checkpoint, no progress.parquet (fpt before live metrics)"
            if (run_dir / "checkpoint").is_dir()
            else "started, no evaluation yet"
        )
        return out
    try:
        from fpt.metrics import read_run

        df = read_run(path)
        if df.empty:
            raise ValueError("no rows")
    except Exception as exc:  # any reader error: a half or foreign file is reported, not fatal
        out["unreadable"] = f"{PROGRESS}: {type(exc).__name__}: {exc}"
        return out
    if out["steps"] is None:
        out["steps"] = _num(df["steps"].max())
    by_step = df.groupby("step")["wall_s"].max().sort_index()
    out["evaluations"] = len(by_step)
    out["step"] = int(by_step.index[-1])
    rep = df[df["split"] == split]
    if not rep.empty:
        out["accuracy"] = _num(rep.loc[rep["step"].idxmax(), "accuracy"])
    if len(by_step) >= 2:
        (s0, s1), (w0, w1) = by_step.index[-2:], by_step.to_numpy()[-2:]
        if w1 > w0:
            rate = float((s1 - s0) / (w1 - w0))
            out["steps_per_s"] = float(f"{rate:.4g}")
            if out["steps"] is not None:
                out["eta_s"] = round(max(0, out["steps"] - out["step"]) / rate)
    return out


def _finished(run: str, run_dir: Path) -> dict[str, Any]:
    spec = _spec(run_dir)
    split = _reported_split(spec.get("task") or _task_of(run))
    out: dict[str, Any] = {
        "run": run,
        "state": "finished",
        "step": None,
        "steps": spec.get("steps"),
        "split": split,
        "accuracy": None,
        "wall_s": None,
        "diverged": None,
        "unreadable": None,
    }
    try:
        from fpt.analysis.stats import final_rows
        from fpt.metrics import read_run

        df = read_run(run_dir / METRICS)
        if df.empty:
            raise ValueError("no rows")
        final = final_rows(df)  # the row a table reports (best_step, before divergence)
    except Exception as exc:  # any reader error: reported, not fatal
        out["unreadable"] = f"{METRICS}: {type(exc).__name__}: {exc}"
        return out
    out["steps"] = _num(df["steps"].max())
    out["step"] = _num(df["stop_step"].max())
    out["wall_s"] = round(float(df["wall_s"].max()), 1)
    out["diverged"] = bool(df["diverged"].any())
    if not final.empty:
        out["accuracy"] = _num(final["accuracy"].iloc[0])
        out["reported_step"] = _num(final["step"].iloc[0])
    return out


def _task_of(run: str) -> str | None:
    first = run.split("/", 1)[0]
    return first.split("=", 1)[1] if first.startswith("task=") else None


def slurm_summary() -> dict[str, Any] | None:
    """Counts of this user's SLURM jobs by state (`squeue --me`), or None without squeue."""
    exe = shutil.which("squeue")
    if exe is None:
        return None
    out: dict[str, Any] = {"states": {}, "jobs": 0, "error": None, "hint": SLURM_MAP_HINT}
    try:
        res = subprocess.run(
            [exe, "--me", "--noheader", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        out["error"] = f"squeue failed: {exc}"
        return out
    if res.returncode != 0:
        out["error"] = f"squeue exited {res.returncode}: {res.stderr.strip()[-300:]}"
        return out
    states = collections.Counter(s.strip() for s in res.stdout.splitlines() if s.strip())
    out["states"] = dict(sorted(states.items()))
    out["jobs"] = sum(states.values())
    return out


def status(
    results: Path, config: dict[str, Any] | None = None, now: float | None = None
) -> dict[str, Any]:
    """Every run under `results` (and, with a validated `config`, its grid's runs not started
    yet as pending), counts by state, and the SLURM job summary where squeue exists."""
    now = time.time() if now is None else now
    runs = []
    for run, d in run_dirs(results).items():
        runs.append(_finished(run, d) if (d / METRICS).exists() else _in_progress(run, d, now))
    if config is not None:
        from fpt.grid import expand

        seen = {r["run"] for r in runs}
        for path, spec in expand(config).runs.items():
            if path not in seen:
                runs.append({"run": path, "state": "pending", "steps": spec.steps})
    counts = collections.Counter(r["state"] for r in runs)
    return {
        "results": str(results),
        "counts": {
            "in_progress": counts["in_progress"],
            "finished": counts["finished"],
            "pending": counts["pending"],
            "unreadable": sum(1 for r in runs if r.get("unreadable")),
        },
        "runs": runs,
        "slurm": slurm_summary(),
    }


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _acc(r: dict[str, Any]) -> str:
    return "-" if r.get("accuracy") is None else f"{r['accuracy']:.4f} {r['split']}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    # the last column (the run path) is not padded
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
        for r in [header, *rows]
    ]


def _unreadable(r: dict[str, Any]) -> str:
    """The table's cell: the file; the reader's error follows the tables."""
    return "UNREADABLE " + r["unreadable"].split(":", 1)[0]


def render(report: dict[str, Any]) -> str:
    """The report as plain aligned text tables, one per state."""
    c = report["counts"]
    lines = [
        f"{report['results']}: {c['in_progress']} in progress, {c['finished']} finished, "
        f"{c['pending']} pending" + (f", {c['unreadable']} unreadable" if c["unreadable"] else "")
    ]
    by_state = collections.defaultdict(list)
    for r in report["runs"]:
        by_state[r["state"]].append(r)
    if by_state["in_progress"]:
        rows = []
        for r in by_state["in_progress"]:
            step = "-" if r["step"] is None else str(r["step"])
            steps = "?" if r["steps"] is None else str(r["steps"])
            pct = (
                f"{100 * r['step'] / r['steps']:.1f}%"
                if r["step"] is not None and r["steps"]
                else "-"
            )
            rate = "-" if r["steps_per_s"] is None else f"{r['steps_per_s']:.3g}"
            what = _unreadable(r) if r["unreadable"] else (r["note"] or _acc(r))
            age = _duration(r["last_write_age_s"])
            rows.append([f"{step}/{steps}", pct, rate, _duration(r["eta_s"]), age, what, r["run"]])
        lines += ["", f"in progress ({len(rows)})"]
        lines += _table(
            ["step/steps", "done", "steps/s", "eta", "last write", "accuracy", "run"], rows
        )
    if by_state["finished"]:
        rows = []
        for r in by_state["finished"]:
            if r["unreadable"]:
                rows.append(["-", "-", "-", _unreadable(r), r["run"]])
                continue
            flag = " diverged" if r["diverged"] else ""
            rows.append(
                [
                    f"{r['step']}/{r['steps']}",
                    _duration(r["wall_s"]),
                    str(r.get("reported_step", "-")),
                    _acc(r) + flag,
                    r["run"],
                ]
            )
        lines += ["", f"finished ({len(rows)})"]
        lines += _table(["stopped/steps", "wall", "reported at", "final accuracy", "run"], rows)
    if by_state["pending"]:
        rows = [[str(r["steps"]), r["run"]] for r in by_state["pending"]]
        lines += ["", f"pending ({len(rows)})"]
        lines += _table(["steps", "run"], rows)
    bad = [r for r in report["runs"] if r.get("unreadable")]
    if bad:
        lines += ["", f"unreadable ({len(bad)})"]
        lines += [f"  {r['run']}\n    {r['unreadable']}" for r in bad]
    slurm = report["slurm"]
    if slurm is not None:
        lines.append("")
        if slurm["error"]:
            lines.append(f"slurm: {slurm['error']}")
        else:
            states = ", ".join(f"{n} {s}" for s, n in slurm["states"].items()) or "none"
            lines.append(f"slurm (squeue --me): {slurm['jobs']} jobs: {states}")
        lines.append(f"  {slurm['hint']}")
    return "\n".join(lines)


def main(results: Path | None, config_path: Path | None, as_json: bool) -> int:
    config = None
    if config_path is not None:
        from fpt.grid import load_config

        config = load_config(config_path)  # ConfigError (a ValueError) -> exit 2 in fpt.cli
    if results is None:
        results = Path(config["results_dir"]) if config is not None else Path("results")
    report = status(results, config)
    try:
        print(json.dumps(report, indent=2) if as_json else render(report))
    except BrokenPipeError:  # `fpt status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
