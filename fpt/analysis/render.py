"""One table model, three renderings: Markdown, LaTeX, CSV."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Table:
    """`header` and `rows` are display strings; `data` is the tidy numeric form (CSV)."""

    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        out = [
            f"### {self.title}",
            "",
            "| " + " | ".join(self.header) + " |",
            "|" + "---|" * len(self.header),
        ]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        out += ["", self.caption] + [f"- {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            for a, b in (
                ("\\", r"\textbackslash{}"),
                ("&", r"\&"),
                ("%", r"\%"),
                ("_", r"\_"),
                ("#", r"\#"),
                ("±", r"$\pm$"),
                ("†", r"$^\dagger$"),
            ):
                s = s.replace(a, b)
            return s

        cols = "l" + "r" * (len(self.header) - 1)
        out = [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            rf"\begin{{tabular}}{{{cols}}}",
            r"\toprule",
        ]
        out.append(" & ".join(esc(h) for h in self.header) + r" \\")
        out.append(r"\midrule")
        out += [" & ".join(esc(c) for c in r) + r" \\" for r in self.rows]
        out += [
            r"\bottomrule",
            r"\end{tabular}",
            rf"\caption{{{esc(self.caption)}}}",
            r"\end{table}",
        ]
        return "\n".join(out) + "\n"

    def write_to(self, out: dict[str, Path]) -> None:
        self.write(out["md"], out["tex"], out["csv"])

    def write(self, md: str | Path, tex: str | Path, csv: str | Path) -> None:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(self.markdown())
        Path(tex).write_text(self.latex())
        self.data.to_csv(csv, index=False)
