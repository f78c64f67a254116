"""Every table and figure the workflow can render: its file stem (= rule name), the
experiment whose runs it reads, its outputs and how to build them. The Snakefile makes one
rule per entry whose experiment is in the config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TABLE_EXTS = ("md", "tex", "csv")
FIGURE_EXTS = ("pdf", "png")


@dataclass(frozen=True)
class Target:
    name: str
    experiment: str
    kind: str  # "table" or "figure"
    caption: str
    build: Callable[[pd.DataFrame, dict[str, Path]], None]
    module: str  # the source file whose edits rerun this target (and only it)

    @property
    def exts(self) -> tuple[str, ...]:
        return TABLE_EXTS if self.kind == "table" else FIGURE_EXTS

    def outputs(self, figures_dir: str | Path) -> dict[str, Path]:
        return {ext: Path(figures_dir) / f"{self.name}.{ext}" for ext in self.exts}


def _table1(df: pd.DataFrame, out: dict[str, Path]) -> None:
    from fpt.analysis.tables import fpt_vs_full

    fpt_vs_full(df).write(out["md"], out["tex"], out["csv"])


def _convergence(df: pd.DataFrame, out: dict[str, Path]) -> None:
    from fpt.analysis.figures import convergence

    convergence(df, out["pdf"], out["png"])


_ANALYSIS = Path(__file__).parent

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            "table1_fpt_vs_full",
            "table1",
            "table",
            "Paper Table 1 (FPT vs fully trained transformer): final test accuracy, ours beside the paper's.",
            _table1,
            str(_ANALYSIS / "tables.py"),
        ),
        Target(
            "convergence",
            "table1",
            "figure",
            "Test accuracy vs training step per task, pretrained vs random backbones (band: 95% CI over seeds).",
            _convergence,
            str(_ANALYSIS / "figures.py"),
        ),
    ]
}


def build(name: str, metrics: str | Path, out: dict[str, Path]) -> None:
    from fpt.metrics import read_run

    TARGETS[name].build(read_run(metrics), out)
