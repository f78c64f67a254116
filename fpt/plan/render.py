"""`fpt plan`'s output formats: a text or Markdown table, JSON and TSV, and the units they
print (durations, FLOPs)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fpt.analysis.render import fmt_duration
from fpt.plan.gpus import GPUS

if TYPE_CHECKING:
    from fpt.plan.experiments import Plan, Row


def fmt_flops(flops: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}FLOP"
    return f"{flops:.3g} FLOP"


def text_table(header: Sequence[str], rows: list[list[str]], markdown: bool = False) -> str:
    """`rows` under `header`: aligned columns (the first left, the others right), or a
    Markdown table."""
    if markdown:
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---" for _ in header) + "|",
        ]
        return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells):
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), *(line(r) for r in rows)])


def tsv(records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """`records` as TSV, one a line under a header of `columns` (default: the first
    record's keys; "run" when there is none); floats to 6 significant digits."""
    cols = list(columns) if columns is not None else list(records[0]) if records else ["run"]
    lines = ["\t".join(cols)]
    lines += ["\t".join(_tsv_value(r[c]) for c in cols) for r in records]
    return "\n".join(lines) + "\n"


def _tsv_value(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def render_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"


# ---- the plan's table -------------------------------------------------------------------------

COLUMNS = (
    "experiment",
    "runs",
    "train FLOPs",
    "eval FLOPs",
    "CPU (here)",
    "GPU lone",
    "GPU fused",
    "host RAM/run",
    "GPU mem/run",
)
TSV_COLUMNS = (
    "experiment",
    "runs",
    "source_runs",
    "train_flops",
    "eval_flops",
    "cpu_s",
    "gpu_lone_s",
    "gpu_fused_s",
    "packs",
    "max_host_mb",
    "max_device_mb",
)


def _cells(r: Row) -> list[str]:
    runs = f"{r.runs}" + (f" +{r.source_runs}" if r.source_runs else "")
    return [
        r.name,
        runs,
        fmt_flops(r.train_flops),
        fmt_flops(r.eval_flops),
        fmt_duration(r.cpu_s),
        fmt_duration(r.gpu_lone_s),
        fmt_duration(r.gpu_fused_s),
        f"{r.max_host_mb / 1024:.1f} GB",
        f"{r.max_device_mb / 1024:.1f} GB",
    ]


def describe_hardware(p: Plan) -> list[str]:
    hw, gpu = p.hardware, GPUS[p.hardware.gpu]
    given = "given" if hw.cpu_gflops else f"measured, {hw.threads or 'default'} threads"
    peaks = ", ".join(f"{p / 1e9:.0f} at width {w}" for w, p in p.cpu_peaks.items())
    return [
        f"CPU (here): fp32 matmul peak GFLOP/s ({given}): {peaks}; x {hw.cpu_fraction} "
        f"achieved, + {hw.cpu_op_us:g} us per op",
        f"GPU: {gpu.name} (peaks TFLOP/s: bf16 {gpu.bf16_tflops:g}, tf32 {gpu.tf32_tflops:g}, "
        f"fp32 {gpu.fp32_tflops:g}; each run at its precision's) x MFU {hw.mfu}, a step at "
        f"least its kernels x {hw.launch_us:g} us; fused: packs of up to {hw.pack_size} runs "
        "differing only in seed/lr",
    ]


def render_text(p: Plan, markdown: bool = False) -> str:
    rows = [_cells(r) for r in p.experiments] + [_cells(p.total)]
    head = [
        f"Plan of {p.source}: {p.total.runs} unique runs in {len(p.experiments)} experiments "
        f"({fmt_flops(p.total.flops)}). Times: one device, runs one after the other.",
        *describe_hardware(p),
        "runs: the experiment's own (+ the Bit Memory source runs it needs); memory: the "
        "largest lone run's, before the safety factor",
    ]
    sep = "\n\n" if markdown else "\n"
    body = text_table(COLUMNS, rows, markdown=markdown)
    return sep.join(["\n".join(("- " + h if markdown else h) for h in head), body]) + "\n"


def render_tsv(p: Plan) -> str:
    """One line per experiment and one for the grid, in TSV_COLUMNS."""
    rows = [{**r.to_json(), "experiment": r.name} for r in [*p.experiments, p.total]]
    return tsv(rows, TSV_COLUMNS)
