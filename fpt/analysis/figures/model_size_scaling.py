"""Test accuracy vs total parameters, pretrained vs random frozen backbones (FPT)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

from fpt.analysis import paper
from fpt.analysis.compare import select
from fpt.analysis.figures import style
from fpt.analysis.stats import final_rows, tag, variants
from fpt.analysis.targets import BuildContext

# GPT-2 backbone parameter counts (the paper's x axis for its size table).
GPT2_PARAMS = {"small": 124.4e6, "medium": 354.8e6, "large": 774.0e6}


def build(ctx: BuildContext) -> None:
    d = final_rows(select(ctx.metrics, {"trainable": "fpt", "init": ("pretrained", "random")}))
    if d.empty:
        return style.empty(ctx.out, "Model size", ctx.missing)
    d = variants(d, ["task", "backbone", "size", "init"])
    d = d.assign(
        **{"test accuracy (%)": d["accuracy"] * 100, "total parameters": d["total_params"]},
        series=tag(d["backbone"] + ", " + d["init"], d["variant"]),
        task=d["task"].map(lambda t: paper.TASK_LABELS.get(t, t)),
    )
    tasks = sorted(d["task"].unique())
    style.setup()
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(style.COLUMN_WIDTH_IN * len(tasks), 2.4), squeeze=False
    )
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = d[d["task"] == task]
        sns.lineplot(data=sub, x="total parameters", y="test accuracy (%)", hue="series",
                     palette="colorblind", marker="o", errorbar=("ci", 95), err_style="bars",
                     ax=ax, legend=ax is axes[0][-1])  # fmt: skip
        if task == paper.TASK_LABELS["cifar10"]:
            for init, by_size in paper.SIZES.items():
                xs = [GPT2_PARAMS[s] for s in by_size]
                ax.plot(xs, list(by_size.values()), ls="--", marker="x", color=style.INIT_COLORS[init],
                        lw=0.8, label=f"paper GPT-2, {init}")  # fmt: skip
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
    style.save(fig, ctx.out)
