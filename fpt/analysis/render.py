"""One table model, four renderings: Markdown, LaTeX, CSV, HTML; and how durations read."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fpt import files


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

    def html(self) -> str:
        """A self-contained page (inline style, no scripts or external files) that Snakemake's
        report shows as is: the title, the table, the caption and notes."""

        def esc(s: object) -> str:
            return html.escape(str(s))

        def row(cells: list[str], tag: str) -> str:
            return "<tr>" + "".join(f"<{tag}>{esc(c)}</{tag}>" for c in cells) + "</tr>"

        out = [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f"<title>{esc(self.title)}</title>",
            f"<style>{_HTML_STYLE}</style>",
            "</head>",
            "<body>",
            f"<h3>{esc(self.title)}</h3>",
            "<table>",
            "<thead>",
            row(self.header, "th"),
            "</thead>",
            "<tbody>",
            *(row(r, "td") for r in self.rows),
            "</tbody>",
            "</table>",
            f'<p class="caption">{esc(self.caption)}</p>',
        ]
        if self.notes:
            out += ["<ul>", *(f"<li>{esc(n)}</li>" for n in self.notes), "</ul>"]
        out += ["</body>", "</html>"]
        return "\n".join(out) + "\n"

    def write_to(self, out: dict[str, Path]) -> None:
        self.write(out["md"], out["tex"], out["csv"], out.get("html"))

    def write(
        self, md: str | Path, tex: str | Path, csv: str | Path, html: str | Path | None = None
    ) -> None:
        # each file whole or not at all (fpt.files): a killed job or a full disk never
        # leaves a truncated table that a rerun would take for finished
        files.write_text(md, self.markdown())
        files.write_text(tex, self.latex())
        files.write_with(csv, lambda tmp: self.data.to_csv(tmp, index=False))
        if html is not None:
            files.write_text(html, self.html())


def fmt_duration(seconds: float, exact: bool = False) -> str:
    """A duration for people. exact=False, for estimates: one unit, rounded ("45 s", "12 min",
    "3.5 h", "1.2 d"); exact=True, for measured times: every unit down to the second ("1 h 5
    min 22 s", "3 min 0 s", "42 s")."""
    if exact:
        h, rest = divmod(int(round(seconds)), 3600)
        m, s = divmod(rest, 60)
        return f"{h} h {m} min {s} s" if h else f"{m} min {s} s" if m else f"{s} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


_HTML_STYLE = (
    "body{font-family:sans-serif;font-size:14px;margin:1em}"
    "table{border-collapse:collapse}"
    "th,td{border-bottom:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child{text-align:left}"
    "thead th{border-bottom:2px solid #333}"
    ".caption{max-width:60em;color:#333}"
)
