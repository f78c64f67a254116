"""Figures from collected metrics. Seaborn, colour-blind palette, paper column width."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from fpt.analysis.paper import TASK_LABELS  # noqa: E402

COLUMN_WIDTH_IN = 3.25  # one column of a two-column paper


def _save(fig, pdf: str | Path, png: str | Path) -> None:
    Path(pdf).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(pdf, bbox_inches="tight")
    fig.savefig(png, bbox_inches="tight", dpi=200)
    plt.close(fig)


def convergence(df: pd.DataFrame, pdf: str | Path, png: str | Path, split: str = "test") -> None:
    """Accuracy vs training step per task; one line per backbone/init/preset, band = 95% CI over seeds."""
    from fpt.analysis.paper import REPORTED_SPLIT

    wanted = df["task"].map(lambda t: REPORTED_SPLIT.get(t, split)) if split == "test" else split
    d = df[df["split"] == wanted].copy()
    d["model"] = d["backbone"] + " " + d["size"] + ", " + d["init"] + ", " + d["trainable"]
    d["accuracy (%)"] = d["accuracy"] * 100
    d["task"] = d["task"].map(lambda t: TASK_LABELS.get(t, t))
    tasks = list(dict.fromkeys(d["task"]))
    sns.set_theme(context="paper", style="whitegrid", font_scale=0.9)
    fig, axes = plt.subplots(
        1, max(len(tasks), 1), figsize=(COLUMN_WIDTH_IN * max(len(tasks), 1), 2.4), squeeze=False
    )
    palette = dict(
        zip(
            sorted(d["model"].unique()),
            sns.color_palette("colorblind", d["model"].nunique()),
            strict=True,
        )
    )
    for ax, task in zip(axes[0], tasks, strict=False):
        sub = d[d["task"] == task]
        sns.lineplot(
            data=sub,
            x="step",
            y="accuracy (%)",
            hue="model",
            palette=palette,
            errorbar=("ci", 95),
            ax=ax,
            legend=ax is axes[0][-1],
        )
        ax.set_title(task)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_ylim(0, 101)
    if tasks and axes[0][-1].get_legend() is not None:
        sns.move_legend(
            axes[0][-1],
            "upper left",
            bbox_to_anchor=(1.02, 1),
            title="backbone, init, trained",
            frameon=False,
        )
    fig.tight_layout()
    _save(fig, pdf, png)
