"""fpt: a reproducible ablation pipeline for Frozen Pretrained Transformers (Lu et al., 2021)."""

__version__ = "0.1.0"
