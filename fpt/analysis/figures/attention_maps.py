"""First-layer attention of trained frozen backbones on Bit XOR and Bit Memory: each answer
token's attention over the input positions (heads and test examples averaged), with the
operand positions it needs boxed, as the paper shows.

CSV: each panel's plotted matrix in long form, one row per (answer token, attended
position): the averaged weight, and whether the cell is boxed as an operand."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from fpt.analysis.figures import style
from fpt.analysis.targets import BuildContext
from fpt.tasks import task_label

# panel (title); y: query_position (an answer token); x: key_position; colour: weight
COLUMNS = [
    "panel", "task", "backbone", "size", "init", "seed", "test_accuracy", "query_position",
    "key_position", "weight", "operand",
]  # fmt: skip


def build(ctx: BuildContext) -> None:
    maps = [dict(np.load(p)) for p in sorted(ctx.extra)]
    if not maps:
        return style.empty(
            ctx.out, "Attention maps (Bit XOR / Bit Memory FPT runs)", ctx.missing, COLUMNS
        )
    style.setup()
    cols = min(len(maps), 2)
    rows = -(-len(maps) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(style.COLUMN_WIDTH_IN * cols, 2.0 * rows), squeeze=False
    )
    for ax in axes.flat[len(maps) :]:
        ax.axis("off")
    rows = []
    for ax, m in zip(axes.flat, maps, strict=False):
        spec = json.loads(str(m["spec"]))
        ans = m["answer_positions"]
        a = m["attention"][ans]  # answer tokens x all positions
        im = ax.imshow(a, cmap="viridis", aspect="auto", vmin=0)
        for i, ops in enumerate(m["operand_positions"]):
            for j in ops:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="white", lw=0.8))
        title = (
            f"{task_label(spec['task'])}: {spec['backbone']} {spec['size']}, "
            f"{spec['init']} (test acc {float(m['accuracy']) * 100:.0f}%)"
        )
        ax.set_title(title, fontsize=7)
        boxed = {(i, int(j)) for i, ops in enumerate(m["operand_positions"]) for j in ops}
        q, k = np.meshgrid(np.arange(a.shape[0]), np.arange(a.shape[1]), indexing="ij")
        rows.append(
            pd.DataFrame(
                {
                    "panel": title,
                    "task": spec["task"],
                    "backbone": spec["backbone"],
                    "size": spec["size"],
                    "init": spec["init"],
                    "seed": spec.get("seed"),
                    "test_accuracy": float(m["accuracy"]),
                    "query_position": np.asarray(ans)[q.ravel()],
                    "key_position": k.ravel(),
                    "weight": a.ravel(),
                    "operand": [(i, j) in boxed for i, j in zip(q.ravel(), k.ravel(), strict=True)],
                }
            )
        )
        ax.set_xlabel("attended input position (token)")
        ax.set_ylabel("answer token")
        ax.set_yticks(range(len(ans)))
        ax.set_yticklabels([str(p) for p in ans], fontsize=5)
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="attention weight")
    fig.tight_layout()
    style.save(fig, ctx.out, data=pd.concat(rows, ignore_index=True), columns=COLUMNS)
