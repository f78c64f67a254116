"""Depth: the first k blocks of the backbone, output + layer norms (output_ln) or output only
trained, pretrained vs random; one column per depth."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.stats import final_rows
from fpt.analysis.targets import BuildContext
from fpt.tasks import task_label

PRESETS = {"output_ln": "output + layer norms", "output_only": "output only"}
PAPER_DEPTHS = [1, 2, 3, 6, 12]


def build(ctx: BuildContext) -> None:
    finals = final_rows(ctx.metrics)
    tasks = ["listops"] + sorted(set(finals["task"]) - {"listops"}) if len(finals) else ["listops"]
    depths = (
        sorted(set(PAPER_DEPTHS) | {int(d) for d in finals["depth"] if str(d) != "all"})
        if len(finals)
        else PAPER_DEPTHS
    )
    depths = [*depths, "all"]
    rows = [
        Row(
            f"{task_label(task)}, {name}, {init}",
            {"task": task, "trainable": preset, "init": init},
            paper.DEPTH.get((preset, init), {}) if task == "listops" else {},
        )
        for task in tasks
        for preset, name in PRESETS.items()
        for init in ("pretrained", "random")
    ]
    write_compare(
        ctx,
        rows,
        title="Depth: the first k blocks",
        note=" Columns: blocks kept (all = the whole backbone; GPT-2 small "
        "has 12). Paper: ListOps, GPT-2 small.",
        col="depth",
        cols=depths,
        col_label=lambda d: (
            "all blocks" if d == "all" else f"{d} block{'' if int(d) == 1 else 's'}"
        ),
    )
