"""Test accuracy vs learning rate per configuration: the curve behind the two protocols.

One panel per task; one line per model (frozen/unfrozen x pretrained/random): each sweep
run's test accuracy at its best-val evaluation (the weights early stopping restored), mean
over seeds with a 95% interval. Stars: the lr the val split chose (per seed); open
diamonds: the paper's protocol (fixed lr, full budget, final test accuracy).

CSV: one row per sweep run at the evaluation plotted (protocol "swept"; `chosen` marks the
stars), and one per fixed-lr run drawn as a diamond (protocol "paper", chosen empty)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from fpt.analysis.figures import style
from fpt.analysis.stats import final_rows
from fpt.analysis.targets import BuildContext
from fpt.protocol import read_selected
from fpt.tasks import paper_tasks, task_label

PAPER_EXPERIMENT = "protocol_paper"
FROZEN = {"fpt": "frozen", "full": "unfrozen"}
ORDER = ["frozen random", "frozen pretrained", "unfrozen random", "unfrozen pretrained"]

# panel (title), task; hue: model; x: lr; y: test_accuracy_pct; marker: protocol / chosen
COLUMNS = [
    "panel", "task", "protocol", "model", "run", "seed", "lr", "step", "chosen",
    "test_accuracy_pct",
]  # fmt: skip


def _label(df: pd.DataFrame) -> pd.Series:
    model = df["trainable"].map(lambda t: FROZEN.get(t, t)) + " " + df["init"]
    if df[["backbone", "size"]].drop_duplicates().shape[0] > 1:
        model = model + " (" + df["backbone"] + " " + df["size"] + ")"
    return model


def build(ctx: BuildContext) -> None:
    frames = [read_selected(p) for p in ctx.extra if p.name == "selected.parquet"]
    sweep = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(
        len(f) for f in frames
    ) else pd.DataFrame()  # fmt: skip
    if sweep.empty:
        return style.empty(ctx.out, "Learning-rate sweep", ctx.missing, COLUMNS)
    m = ctx.metrics
    fixed = final_rows(m[m["experiment"] == PAPER_EXPERIMENT]) if len(m) else m.iloc[0:0]
    sweep = sweep.assign(model=_label(sweep), acc=sweep["test_accuracy"] * 100)
    fixed = fixed.assign(model=_label(fixed), acc=fixed["accuracy"] * 100) if len(fixed) else fixed
    tasks = [t for t in paper_tasks() if t in set(sweep["task"])]
    tasks += sorted(set(sweep["task"]) - set(tasks))
    models = [x for x in ORDER if x in set(sweep["model"])]
    models += sorted(set(sweep["model"]) - set(models))
    colors = dict(zip(models, sns.color_palette("colorblind", len(models)), strict=True))

    style.setup()
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(style.COLUMN_WIDTH_IN * len(tasks), 2.6), squeeze=False
    )
    rows = []
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = sweep[sweep["task"] == task]
        sns.lineplot(data=sub, x="lr", y="acc", hue="model", hue_order=models, palette=colors,
                     marker="o", errorbar=("ci", 95), ax=ax, legend=False)  # fmt: skip
        chosen = sub[sub["chosen"].astype(bool)]
        ax.scatter(chosen["lr"], chosen["acc"], marker="*", s=90, zorder=5,
                   c=[colors[x] for x in chosen["model"]], edgecolors="black", linewidths=0.4)  # fmt: skip
        fx = fixed[fixed["task"] == task] if len(fixed) else fixed
        if len(fx):
            ax.scatter(fx["lr"], fx["acc"], marker="D", s=30, zorder=4, facecolors="none",
                       edgecolors=[colors.get(x, "gray") for x in fx["model"]], linewidths=1.2)  # fmt: skip
        panel = task_label(task)
        rows.append(
            sub.assign(panel=panel, protocol="swept", chosen=sub["chosen"].astype(bool))
            .assign(_hue=lambda x: x["model"].map(models.index))
            .sort_values(["_hue", "lr", "seed", "run"])
        )
        if len(fx):
            rows.append(fx.assign(panel=panel, protocol="paper", chosen=None).sort_values("run"))
        ax.set_xscale("log")
        ax.set_title(task_label(task))
        ax.set_xlabel("learning rate")
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(0, 101)
        ax.margins(x=0.15)
    handles = [plt.Line2D([], [], color=colors[x], marker="o", label=x) for x in models]
    handles += [
        plt.Line2D([], [], ls="", marker="*", color="gray", markeredgecolor="black", ms=10,
                   label="chosen on val"),
        plt.Line2D([], [], ls="", marker="D", color="gray", markerfacecolor="none",
                   label="paper protocol (fixed lr)"),
    ]  # fmt: skip
    fig.tight_layout()
    # below the panels (saved with a tight bounding box), so one panel keeps its width
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
               frameon=False)  # fmt: skip
    data = pd.concat(rows, ignore_index=True).rename(columns={"acc": "test_accuracy_pct"})
    style.save(fig, ctx.out, data=data, columns=COLUMNS)
