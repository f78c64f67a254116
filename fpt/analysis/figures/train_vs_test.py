"""Final train vs test accuracy per run, one panel per task: points below the diagonal
overfit (train above test).

CSV: one row per plotted point, i.e. per run at its final (reported) evaluation."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from fpt.analysis.figures import style
from fpt.analysis.stats import final_rows, tag, variants
from fpt.analysis.targets import BuildContext
from fpt.tasks import task_label, task_order

# panel (title), task; hue: model; x: train_accuracy_pct; y: test_accuracy_pct
COLUMNS = [
    "panel", "task", "model", "variant", "run", "seed", "step", "split", "train_accuracy_pct",
    "test_accuracy_pct",
]  # fmt: skip


def build(ctx: BuildContext) -> None:
    test = final_rows(ctx.metrics, "test", ctx.collapse_margin)
    train = ctx.metrics[ctx.metrics["split"] == "train"][["run", "step", "accuracy"]]
    d = test.merge(train.rename(columns={"accuracy": "train"}), on=["run", "step"], how="inner")
    if d.empty:
        return style.empty(ctx.out, "Train vs test", ctx.missing, COLUMNS)
    d = variants(d, ["task", "backbone", "size", "init", "trainable"])
    d = d.assign(
        **{"train accuracy (%)": d["train"] * 100, "test accuracy (%)": d["accuracy"] * 100},
        model=tag(
            d["backbone"] + " " + d["size"] + ", " + d["init"] + ", " + d["trainable"], d["variant"]
        ),
    )
    tasks = task_order(d["task"])
    data = d.assign(
        panel=d["task"].map(task_label),
        train_accuracy_pct=d["train accuracy (%)"],
        test_accuracy_pct=d["test accuracy (%)"],
        _panel=d["task"].map(tasks.index),
    ).sort_values(["_panel", "model", "run"])
    style.setup()
    w = style.COLUMN_WIDTH_IN * 0.75
    fig, axes = plt.subplots(1, len(tasks), figsize=(w * len(tasks), w), squeeze=False)
    pal = style.palette(d["model"])
    for ax, task in zip(axes[0], tasks, strict=True):
        ax.plot([0, 100], [0, 100], color="0.6", lw=0.8, ls="--", zorder=0)
        sns.scatterplot(
            data=d[d["task"] == task],
            x="train accuracy (%)",
            y="test accuracy (%)",
            hue="model",
            palette=pal,
            ax=ax,
            s=25,
            legend=ax is axes[0][-1],
        )
        ax.set_title(task_label(task))
        ax.set_xlim(0, 101)
        ax.set_ylim(0, 101)
        ax.set_aspect("equal")
    sns.move_legend(
        axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=7,
        title="backbone size, init, trained",
    )  # fmt: skip
    fig.tight_layout()
    style.save(fig, ctx.out, data=data, columns=COLUMNS)
