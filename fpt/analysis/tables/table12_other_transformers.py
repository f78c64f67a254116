"""Other pretrained language transformers as frozen backbones (FPT)."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext

NAMES = {"gpt2": "GPT-2", "bert": "BERT", "t5": "T5 (encoder)", "longformer": "Longformer"}


def build(ctx: BuildContext) -> None:
    df = ctx.metrics
    present = sorted(set(df["backbone"]) - set(NAMES) - {"lstm", "vit"}) if len(df) else []
    rows = [
        Row(
            name,
            {"backbone": b, "init": "pretrained", "trainable": "fpt"},
            paper.OTHER_TRANSFORMERS[b],
        )
        for b, name in NAMES.items()
    ] + [Row(b, {"backbone": b, "init": "pretrained", "trainable": "fpt"}) for b in present]
    write_compare(
        ctx,
        rows,
        title="Other pretrained language transformers",
        note="Base-size models; the paper reports CIFAR-10 and ListOps.",
        cols=["cifar10", "listops"],
    )
