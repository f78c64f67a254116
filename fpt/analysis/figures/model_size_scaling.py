"""Test accuracy vs total parameters, pretrained vs random frozen backbones (FPT).

CSV: one row per run (its final evaluation; a point is the mean of its series' runs at one
parameter count, error bar: seaborn's 95% bootstrap CI), plus the paper's GPT-2 points drawn
dashed on the CIFAR-10 panel (source "paper", no run)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from fpt.analysis import paper
from fpt.analysis.compare import select
from fpt.analysis.figures import style
from fpt.analysis.stats import final_rows, tag, variants
from fpt.analysis.targets import BuildContext
from fpt.tasks import task_label

# GPT-2 backbone parameter counts (the paper's x axis for its size table).
GPT2_PARAMS = {"small": 124.4e6, "medium": 354.8e6, "large": 774.0e6}

# panel (title), task; hue: series; x: total_params; y: test_accuracy_pct
COLUMNS = [
    "panel", "task", "source", "series", "backbone", "size", "init", "variant", "run", "seed",
    "step", "total_params", "test_accuracy_pct",
]  # fmt: skip


def build(ctx: BuildContext) -> None:
    d = final_rows(select(ctx.metrics, {"trainable": "fpt", "init": ("pretrained", "random")}))
    if d.empty:
        return style.empty(ctx.out, "Model size", ctx.missing, COLUMNS)
    d = variants(d, ["task", "backbone", "size", "init"])
    d = d.assign(
        **{"test accuracy (%)": d["accuracy"] * 100, "total parameters": d["total_params"]},
        series=tag(d["backbone"] + ", " + d["init"], d["variant"]),
        task_id=d["task"],
        task=d["task"].map(task_label),
    )
    tasks = sorted(d["task"].unique())
    rows = [
        d.assign(
            panel=d["task"],
            task=d["task_id"],
            source="ours",
            test_accuracy_pct=d["test accuracy (%)"],
        ).sort_values(["panel", "series", "total_params", "run"])
    ]
    style.setup()
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(style.COLUMN_WIDTH_IN * len(tasks), 2.4), squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = d[d["task"] == task]
        sns.lineplot(data=sub, x="total parameters", y="test accuracy (%)", hue="series",
                     palette="colorblind", marker="o", errorbar=("ci", 95), err_style="bars",
                     ax=ax, legend=ax is axes[0][-1])  # fmt: skip
        if task == task_label("cifar10"):
            for init, by_size in paper.SIZES.items():
                xs = [GPT2_PARAMS[s] for s in by_size]
                ax.plot(xs, list(by_size.values()), ls="--", marker="x", color=style.INIT_COLORS[init],
                        lw=0.8, label=f"paper GPT-2, {init}")  # fmt: skip
                rows.append(
                    pd.DataFrame(
                        {
                            "panel": task,
                            "task": "cifar10",
                            "source": "paper",
                            "series": f"paper GPT-2, {init}",
                            "backbone": "gpt2",
                            "size": list(by_size),
                            "init": init,
                            "total_params": xs,
                            "test_accuracy_pct": list(by_size.values()),
                        }
                    )
                )
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("total parameters (log scale)")
        ax.set_ylim(0, 101)
        if sub["total parameters"].nunique() == 1:
            ax.text(0.5, 0.05, f"one size {ctx.missing.replace('not in', 'in')}", transform=ax.transAxes,
                    ha="center", fontsize=7)  # fmt: skip
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(
            axes[0][-1],
            "upper left",
            bbox_to_anchor=(1.02, 1),
            title="backbone, init",
            frameon=False,
        )
    fig.tight_layout()
    data = pd.concat(rows, ignore_index=True).reindex(columns=COLUMNS)
    style.save(fig, ctx.out, data=data, columns=COLUMNS)
