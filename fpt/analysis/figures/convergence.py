"""Test accuracy vs training step per task: frozen pretrained vs frozen random (and fully
trained) backbones, mean over seeds with a 95% CI band.

CSV: one row per plotted evaluation (run, step) of the runs shown, in panel order; a line
is the mean of its rows at each step (seaborn, 95% bootstrap CI band)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from fpt.analysis.compare import select
from fpt.analysis.figures import style
from fpt.analysis.stats import reported, tag, variants
from fpt.analysis.targets import BuildContext
from fpt.tasks import task_label, task_order

# panel (title), task; hue: model; x: step; y: accuracy_pct on `split`; pooled over run/seed
COLUMNS = ["panel", "task", "model", "variant", "run", "seed", "split", "step", "accuracy_pct"]


def build(ctx: BuildContext) -> None:
    d = reported(select(ctx.metrics, {"trainable": ("fpt", "full")}, {"init": "stats"}))
    d = d[d["loss"].astype(float).abs() < float("inf")].copy()
    if d.empty:
        return style.empty(ctx.out, "Convergence", ctx.missing, COLUMNS)
    d = variants(d, ["task", "backbone", "size", "init", "trainable"])  # a band pools seeds only
    model = d["backbone"] + " " + d["size"] + ", " + d["init"] + ", " + d["trainable"]
    d["model"] = tag(model, d["variant"])
    d["accuracy (%)"] = d["accuracy"] * 100
    order = task_order(d["task"])
    data = d.assign(
        panel=d["task"].map(task_label),
        accuracy_pct=d["accuracy (%)"],
        _panel=d["task"].map(order.index),
    ).sort_values(["_panel", "model", "run", "step"])
    style.setup()
    n = len(order)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(style.COLUMN_WIDTH_IN * cols * 0.8, 2.2 * rows), squeeze=False
    )
    pal = style.palette(d["model"])
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        sub = d[d["task"] == order[i]]
        sns.lineplot(data=sub, x="step", y="accuracy (%)", hue="model", palette=pal,
                     errorbar=("ci", 95), ax=ax, legend=i == 0)  # fmt: skip
        ax.set_title(task_label(order[i]))
        ax.set_xlabel("training step (gradient updates)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 101)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if axes.flat[0].get_legend() is not None:
        axes.flat[0].get_legend().remove()
    fig.legend(handles, labels, title="backbone size, init, trained", loc="upper center",
               bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)  # fmt: skip
    fig.tight_layout()
    style.save(fig, ctx.out, data=data, columns=COLUMNS)
