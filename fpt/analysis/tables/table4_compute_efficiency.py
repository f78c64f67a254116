"""Compute efficiency: training steps until test accuracy converges, frozen pretrained
(FPT) vs frozen random, and the speedup. The paper states no criterion; ours is
stats.steps_to_converge with the config's `analysis.convergence_tolerance`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fpt.analysis import paper
from fpt.analysis.compare import select
from fpt.analysis.render import Table
from fpt.analysis.stats import (
    cell,
    cell_of,
    final_rows,
    reported,
    run_positions,
    steps_to_converge,
    variants,
)
from fpt.analysis.targets import BuildContext
from fpt.tasks import paper_tasks, task_label, task_order

ROLES = {"FPT": "pretrained", "random": "random"}


def _per_run(curves: pd.DataFrame, tolerance: float, z: float) -> pd.DataFrame:
    step, accuracy = curves["step"].to_numpy(), curves["accuracy"].to_numpy()
    examples = pd.to_numeric(curves["eval_examples"], errors="coerce")
    examples = examples.to_numpy(dtype=float, na_value=np.nan)
    out = []
    for run, rows in run_positions(curves):  # numpy per run, not a pandas group per run
        e = examples[rows][~np.isnan(examples[rows])]
        n = int(e.max()) if len(e) else None
        steps = steps_to_converge(step[rows].tolist(), accuracy[rows].tolist(), tolerance, n, z)
        out.append({"run": run, "converge_step": steps})
    return pd.DataFrame(out, columns=["run", "converge_step"])


def _steps(v: float) -> str:
    return f"{v:.0e}".replace("e+0", "e")  # 1e4, as the paper writes them


def build(ctx: BuildContext) -> None:
    tol = float(ctx.settings["convergence_tolerance"])
    z = float(ctx.settings["convergence_noise_z"])
    df = select(ctx.metrics, {"trainable": "fpt"}, {"backbone": "lstm"})
    df = df[~df["init"].isin(["stats", "bit_memory"])]
    curves = reported(df[df["diverged"] == False])  # noqa: E712 (a boolean column)
    empty = pd.DataFrame(columns=["run", "converge_step"])
    conv = _per_run(curves, tol, z) if len(curves) else empty
    finals = variants(
        final_rows(df, "test", ctx.collapse_margin), ["task", "backbone", "size", "init"]
    )
    finals = finals.merge(conv, on="run", how="left")
    model_of = zip(finals["backbone"], finals["size"], finals["variant"], strict=True)
    models = sorted(set(model_of))
    by_task = {
        t: set(zip(g["backbone"], g["size"], g["variant"], strict=True))
        for t, g in finals.groupby("task")
    }
    tasks = task_order([*paper_tasks(), *finals["task"]])  # every paper task, then the rest
    header = [
        "Task", "Backbone", "FPT steps", "random steps", "speedup", "FPT acc", "random acc",
        "paper FPT steps", "paper random steps", "paper speedup",
    ]  # fmt: skip
    rows, data = [], []
    for task in tasks:
        ref = paper.EFFICIENCY.get(task)
        ref_cells = [_steps(ref[0]), _steps(ref[1]), f"{ref[2]:g}x"] if ref else ["—"] * 3
        task_models = [m for m in models if m in by_task.get(task, set())]
        if not task_models:
            rows.append([task_label(task), "—"] + [ctx.missing] * 5 + ref_cells)
            continue
        for backbone, size, variant in task_models:
            sel = finals[
                (finals["task"] == task)
                & (finals["backbone"] == backbone)
                & (finals["size"] == size)
                & (finals["variant"] == variant)
            ]
            cells, accs = {}, {}
            for role, init in ROLES.items():
                s = sel[sel["init"] == init]
                cells[role] = cell(s["converge_step"].dropna().tolist())
                accs[role] = cell_of(s)
            both = cells["FPT"].n and cells["random"].n
            speed = cells["random"].mean / max(cells["FPT"].mean, 1) if both else None
            model = f"{backbone} {size}" + (f" [{variant}]" if variant else "")
            rows.append(
                [task_label(task), model]
                + [cells[r].fmt(scale=1, digits=0) if cells[r].n else ctx.missing for r in ROLES]
                + [f"{speed:.1f}x" if speed is not None else "—"]
                + [accs[r].fmt() if accs[r].n else ctx.missing for r in ROLES]
                + ref_cells
            )
            data.append({
                "task": task, "backbone": backbone, "size": size, "variant": variant,
                "tolerance": tol, "noise_z": z,
                "fpt_steps": cells["FPT"].mean, "fpt_steps_ci95": cells["FPT"].ci95, "fpt_n": cells["FPT"].n,
                "random_steps": cells["random"].mean, "random_steps_ci95": cells["random"].ci95,
                "random_n": cells["random"].n, "speedup": speed,
                "fpt_accuracy": accs["FPT"].mean, "fpt_accuracy_ci95": accs["FPT"].ci95,
                "fpt_accuracy_n": accs["FPT"].n,
                "random_accuracy": accs["random"].mean, "random_accuracy_ci95": accs["random"].ci95,
                "random_accuracy_n": accs["random"].n,
                "paper_fpt_steps": ref[0] if ref else None, "paper_random_steps": ref[1] if ref else None,
                "paper_speedup": ref[2] if ref else None,
            })  # fmt: skip
    caption = (
        f"Gradient steps to converge. Criterion: the first evaluation from which a run's test "
        f"accuracy stays within its tolerance of its own best, the tolerance being "
        f"{tol * 100:g} percentage point(s) (analysis.convergence_tolerance) or {z:g} binomial "
        "standard errors of the best accuracy on the run's test set, z sqrt(p (1 - p) / n) "
        "(analysis.convergence_noise_z), whichever is larger, so that evaluation noise is not "
        "taken for progress; mean over seeds ± 95% t-interval; speedup = random / FPT. "
        "Converging early to a low plateau counts as converging: read the steps beside the "
        "final accuracy (%). Resolution is the evaluation interval. Diverged runs are left out. "
        "Paper: Lu et al. (2021), which does not state its criterion."
    )
    caption = " ".join(x for x in (caption, ctx.precedence_note()) if x)
    Table(
        "Compute efficiency: steps to converge", caption, header, rows, pd.DataFrame(data)
    ).write_to(ctx.out)
