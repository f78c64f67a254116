"""The shape most of the paper's tables share: rows are model variants, columns are tasks
(or another axis, e.g. depth), each cell our final test accuracy beside the paper's number.

A `Row` selects runs by column values; its runs split by backbone and size when it does
not fix them (the demo's MiniLM and the paper's GPT-2 are different rows). Cells with no
run say `ctx.missing` ("not in demo"), never vanish.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fpt.analysis.render import Table
from fpt.analysis.stats import DEFAULT_COLLAPSE_MARGIN, Cell, cell_of, final_rows, variants
from fpt.tasks import paper_tasks, task_label

CELL_CAPTION = (
    "Cells: test accuracy (%) at each run's final evaluation on the full fixed test set "
    "(homology: TAPE valid, as the paper reports), mean over seeds ± 95% t-interval with n = "
    "seeds, or the single value (n=1). A cell pools only runs that share every setting but "
    "the seed; runs of other settings get a row of their own, named by what differs. "
    "† marks a cell with a run that diverged (non-finite loss; its last finite evaluation is "
    "shown); ‡ a run that collapsed: after learning, its last two or more evaluations sat "
    "within max(2 points, 3 binomial standard errors) of chance (the most frequent label's "
    "rate), and its evaluation before the collapse is shown. Paper: Lu et al. (2021); * in a "
    "paper cell = diverged there (learned, then collapsed)."
)
VARIES = "varies: rows below"


@dataclass(frozen=True)
class Row:
    label: str
    match: dict[str, Any]  # column -> value or tuple of values
    paper: dict[Any, float | str] = field(default_factory=dict)  # column value -> number
    exclude: dict[str, Any] = field(default_factory=dict)
    paper_params: str | None = None  # the paper's trainable-parameter count for this row


def _isin(df: pd.DataFrame, spec: dict[str, Any]) -> pd.Series:
    ok = pd.Series(True, index=df.index)
    for col, val in spec.items():
        vals = val if isinstance(val, tuple | list | set) else (val,)
        ok &= df[col].astype(str).isin([str(v) for v in vals])
    return ok


def select(df: pd.DataFrame, match: dict[str, Any], exclude: dict[str, Any] | None = None):
    """Rows of `df` with every `match` column in its values and no `exclude` column in its."""
    ok = _isin(df, match)
    for col, val in (exclude or {}).items():
        ok &= ~_isin(df, {col: val})
    return df[ok]


def split_paper(v: float | str | None) -> tuple[float | None, str]:
    """A published cell as (number, annotation): "38 (LRA)" -> (38.0, "(LRA)"), "89.0*" ->
    (89.0, "*"), so the tidy CSV keeps a numeric paper column."""
    if v is None or isinstance(v, int | float):
        return v, ""
    m = re.match(r"\s*([0-9.]+)\s*(.*)", v)
    return (float(m.group(1)), m.group(2).strip()) if m else (None, v)


def fmt_paper(v: float | str | None) -> str:
    return "—" if v is None else (v if isinstance(v, str) else f"{v:g}")


def columns_with_extras(wanted: list[Any], present: Iterable[Any]) -> list[Any]:
    """The paper's columns, then any other value the runs have (e.g. the demo's digits)."""
    extra = [v for v in dict.fromkeys(present) if v not in wanted]
    return list(wanted) + sorted(extra, key=str)


def compare_table(
    df: pd.DataFrame,
    rows: list[Row],
    *,
    title: str,
    caption: str,
    missing: str,
    col: str = "task",
    cols: list[Any] | None = None,
    col_label=None,
    params: bool = False,
    split_by_model: bool = True,
    collapse_margin: float = DEFAULT_COLLAPSE_MARGIN,
) -> Table:
    """One table row per Row (per backbone and size among its runs, and per variant: runs
    of other settings than the seed, stats.variants), one ours/paper column pair per value
    of `col` (tasks: `cols`, default the paper's seven, plus the runs' others)."""
    finals = final_rows(df, "test", collapse_margin)
    if col == "task":  # the paper's tasks, then any other task the runs have
        cols = columns_with_extras(cols or paper_tasks(), finals["task"] if len(finals) else [])
    col_label = col_label or task_label
    header = ["Model"] + [
        h for v in cols for h in (f"{col_label(v)} (ours)", f"{col_label(v)} (paper)")
    ]
    if params:
        header += ["trainable params", "reachable params", "total params", "trainable (paper)"]
    out_rows, data = [], []
    for row in rows:
        runs = select(finals, row.match, row.exclude)
        fixed = {"backbone", "size"} <= set(row.match)
        split = not fixed and split_by_model and not runs.empty
        runs = variants(runs, ["backbone", "size", col] if split else [col])
        groups = list(runs.groupby(["backbone", "size"], sort=True)) if split else [(None, runs)]
        for key, sub in groups:
            label = row.label if key is None else f"{row.label} ({key[0]} {key[1]})"
            by_col = {str(v): sub[sub[col].astype(str) == str(v)] for v in cols}
            varied = {v for v, s in by_col.items() if (s["variant"] != "").any()}
            names = sorted(set(sub["variant"]) - {""})
            for variant in ["", *names]:  # the row itself, then one row per variant
                line = [f"{label} [{variant}]" if variant else label]
                for v in cols:
                    sel = by_col[str(v)]
                    sel = sel[sel["variant"] == variant]
                    c = cell_of(sel)
                    ref = row.paper.get(v)
                    if c.n:
                        text = c.fmt()
                    elif variant:  # a variant row fills only the cells it differs in
                        text = "—"
                    else:
                        text = VARIES if str(v) in varied else missing
                    line += [text, fmt_paper(ref)]
                    if c.n or not variant:
                        data.append(_record(row, key, col, v, c, ref, sel) | {"variant": variant})
                if params:
                    line += _param_cells(sub[sub["variant"] == variant], missing)
                    line += [row.paper_params or "—"]
                out_rows.append(line)
    return Table(title, caption, header, out_rows, pd.DataFrame(data))


def _record(row: Row, key, col: str, v, c: Cell, ref, sel: pd.DataFrame) -> dict[str, Any]:
    scalar = {k: x for k, x in row.match.items() if not isinstance(x, tuple | list | set)}
    return {
        "row": row.label,
        **{a: scalar.get(a) for a in ("init", "trainable")},
        "backbone": key[0] if key else scalar.get("backbone"),
        "size": key[1] if key else scalar.get("size"),
        col: v,
        "accuracy_mean": c.mean,
        "ci95": c.ci95,
        "n": c.n,
        "diverged": c.diverged,
        "collapsed": c.collapsed,
        **dict(zip(("paper", "paper_note"), split_paper(ref), strict=True)),
        "trainable_params": int(sel["trainable_params"].iloc[0]) if len(sel) else None,
        "total_params": int(sel["total_params"].iloc[0]) if len(sel) else None,
    }


def fmt_count(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def _param_cells(sub: pd.DataFrame, missing: str) -> list[str]:
    """Trainable, reachable (can receive a gradient at the task's length) and total counts."""
    if sub.empty:
        return [missing] * 3

    # the head's size depends on the task: show the range when tasks differ
    def rng(s: pd.Series) -> str:
        s = pd.to_numeric(s, errors="coerce").dropna()
        if s.empty:
            return "—"  # metrics written before the count existed
        lo, hi = fmt_count(s.min()), fmt_count(s.max())
        return lo if lo == hi else f"{lo}–{hi}"

    return [rng(sub[c]) for c in ("trainable_params", "reachable_params", "total_params")]


def write_compare(ctx, rows: list[Row], *, title: str, note: str = "", **kw: Any) -> None:
    """compare_table over the target's metrics, captioned and written to its outputs."""
    compare_table(
        ctx.metrics,
        rows,
        title=title,
        caption=" ".join(x for x in (CELL_CAPTION, ctx.precedence_note(), note.strip()) if x),
        missing=ctx.missing,
        collapse_margin=ctx.collapse_margin,
        **kw,
    ).write_to(ctx.out)
