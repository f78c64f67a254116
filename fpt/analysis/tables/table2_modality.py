"""Paper Table 2: frozen backbones by pretraining modality (FPT parameter set)."""

from __future__ import annotations

from fpt.analysis import paper
from fpt.analysis.compare import Row, write_compare
from fpt.analysis.targets import BuildContext

FPT = {"trainable": "fpt"}
ROWS = [
    Row("Random", {**FPT, "init": "random"}, paper.MODALITY["Random"], {"backbone": "lstm"}),
    Row("Bit (pretrained on Bit Memory)", {**FPT, "init": "bit_memory"}, paper.MODALITY["Bit"]),
    Row("ViT (ImageNet)", {**FPT, "init": "pretrained", "backbone": "vit"}, paper.MODALITY["ViT"]),
    Row(
        "Language",
        {**FPT, "init": "pretrained"},
        paper.MODALITY["Language (GPT-2)"],
        {"backbone": ("vit", "lstm")},
    ),
]


def build(ctx: BuildContext) -> None:
    write_compare(
        ctx,
        ROWS,
        title="Table 2: frozen backbones by pretraining modality",
        note=" Paper: 12-layer backbones; language = GPT-2 small.",
    )
