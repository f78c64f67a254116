"""Table builders: collected metrics (one experiment) -> Table."""

from __future__ import annotations

import pandas as pd

from fpt.analysis import paper
from fpt.analysis.render import Table
from fpt.analysis.stats import cell, final_rows

MODEL_KEYS = ["backbone", "size", "init", "trainable"]


def _model_label(backbone: str, size: str, init: str, trainable: str) -> str:
    role = paper.table1_role(backbone, init, trainable)
    name = f"{backbone} {size}, {init}, {trainable}"
    return f"{role}: {name}" if role else name


def fpt_vs_full(df: pd.DataFrame, tasks: list[str] | None = None) -> Table:
    """Paper Table 1: final test accuracy per model (rows) and task (columns), our number
    beside the paper's. Cells: mean over seeds ± 95% t-interval, or the single value (n=1);
    † marks a diverged run."""
    finals = final_rows(df, "test")
    tasks = tasks or [t for t in paper.TASK_LABELS if t in set(finals["task"])]
    models = finals[MODEL_KEYS].drop_duplicates().sort_values(MODEL_KEYS).itertuples(index=False)
    header = ["Model"] + [
        h
        for t in tasks
        for h in (f"{paper.TASK_LABELS[t]} (ours)", f"{paper.TASK_LABELS[t]} (paper)")
    ]
    rows, data = [], []
    for m in models:
        role = paper.table1_role(m.backbone, m.init, m.trainable)
        row = [_model_label(*m)]
        for t in tasks:
            sel = finals[
                (finals[MODEL_KEYS] == pd.Series(m._asdict())).all(axis=1) & (finals["task"] == t)
            ]
            c = cell(sel["accuracy"].tolist(), sel["diverged"].tolist())
            ref = paper.TABLE1.get(role, {}).get(t) if role else None
            row += [c.fmt() if c.n else "not run", "—" if ref is None else f"{ref:g}"]
            data.append(
                {
                    **m._asdict(),
                    "role": role,
                    "task": t,
                    "accuracy_mean": c.mean,
                    "ci95": c.ci95,
                    "n": c.n,
                    "diverged": c.diverged,
                    "paper": ref,
                    "step": int(sel["step"].max()) if c.n else None,
                }
            )
        rows.append(row)
    caption = (
        "Test accuracy (%) at the final evaluation of each run (full fixed test set), mean over seeds "
        "± 95% t-interval (n = seeds); (n=1) marks a single run; † marks a run that diverged (its last "
        "finite evaluation is shown). Paper: Lu et al. (2021), Table 1; the paper's FPT is GPT-2."
    )
    return Table(
        "Table 1: FPT vs fully trained transformer", caption, header, rows, pd.DataFrame(data)
    )
