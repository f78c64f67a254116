"""Successive unfreezing as grouped bars per task, pretrained vs random.

CSV: one row per run (its final evaluation; a bar is the mean of its runs, error bar:
seaborn's 95% bootstrap CI), plus one row per black tick of the paper's values (source
"paper", no run)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from fpt.analysis.compare import select
from fpt.analysis.figures import style
from fpt.analysis.paper import LADDER as LADDER_PAPER
from fpt.analysis.stats import final_rows, tag, variants
from fpt.analysis.targets import BuildContext
from fpt.models.freezing import LADDER
from fpt.tasks import task_label, task_order

# panel (title), task; x: trained; hue: init; y: test_accuracy_pct
COLUMNS = [
    "panel", "task", "source", "trained", "trainable", "init", "variant", "run", "seed", "step",
    "test_accuracy_pct",
]  # fmt: skip


def _paper_markers(ax, task: str, x_order: list[str], hue_order: list[str]) -> list[dict]:
    """The paper's value for each bar, as a black tick on it (GPT-2 small); the ticks drawn."""
    width = 0.8 / max(len(hue_order), 1)
    label = "paper (GPT-2)"
    drawn = []
    for h, hue in enumerate(hue_order):
        init = hue.split(" ")[0]
        for x, name in enumerate(x_order):
            preset = next(p for p, n in LADDER.items() if n == name)
            ref = LADDER_PAPER.get((init, preset), {}).get(task)
            if isinstance(ref, int | float):
                xc = x - 0.4 + width * (h + 0.5)
                ax.plot([xc - width / 2.5, xc + width / 2.5], [ref, ref], color="black", lw=1.2,
                        label=label)  # fmt: skip
                label = None
                drawn.append(
                    {"trained": name, "trainable": preset, "init": hue, "test_accuracy_pct": ref}
                )
    return drawn


def build(ctx: BuildContext) -> None:
    d = final_rows(
        select(ctx.metrics, {"trainable": tuple(LADDER), "init": ("pretrained", "random")})
    )
    if d.empty:
        return style.empty(ctx.out, "Unfreezing ladder", ctx.missing, COLUMNS)
    d = variants(d, ["task", "backbone", "size", "init", "trainable"])
    d = d.assign(
        trained=d["trainable"].map(LADDER),
        **{"test accuracy (%)": d["accuracy"] * 100},
        init=tag(d["init"] + " (" + d["backbone"] + " " + d["size"] + ")", d["variant"]),
    )
    order = task_order(d["task"])
    style.setup()
    fig, axes = plt.subplots(
        1, len(order), figsize=(style.COLUMN_WIDTH_IN * max(len(order), 1), 2.4), squeeze=False
    )
    hue_order = sorted(d["init"].unique())
    rows = []
    for ax, task in zip(axes[0], order, strict=True):
        sub = d[d["task"] == task]
        x_order = [v for v in LADDER.values() if v in set(sub["trained"])]
        sns.barplot(data=sub, x="trained", y="test accuracy (%)", hue="init", order=x_order,
                    hue_order=hue_order, palette="colorblind", errorbar=("ci", 95), ax=ax,
                    legend=ax is axes[0][-1])  # fmt: skip
        ticks = _paper_markers(ax, task, x_order, hue_order)
        panel = task_label(task)
        rows.append(
            sub.assign(
                panel=panel,
                source="ours",
                test_accuracy_pct=sub["test accuracy (%)"],
                _x=sub["trained"].map(x_order.index),
                _hue=sub["init"].map(hue_order.index),
            ).sort_values(["_x", "_hue", "run"])
        )
        if ticks:
            rows.append(pd.DataFrame(ticks).assign(panel=panel, task=task, source="paper"))
        ax.set_title(task_label(task))
        ax.set_xlabel("parameters trained (cumulative)")
        ax.set_ylim(0, 101)
        ax.tick_params(axis="x", labelrotation=20)
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(
            axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="init", frameon=False
        )
    fig.tight_layout()
    data = pd.concat(rows, ignore_index=True).reindex(columns=COLUMNS)
    style.save(fig, ctx.out, data=data, columns=COLUMNS)
