"""Building a backbone for one run: the family (fpt.models.families), its weights (random from
the shipped config, fpt.models.random_init; pretrained, fpt.models.weights; or the other
inits of fpt.models.init), its depth and its attention implementation.
"""

from __future__ import annotations

from pathlib import Path

from fpt.models import init as inits
from fpt.models import random_init as random_inits
from fpt.models.backbones import Backbone
from fpt.models.families import CONFIG_DIR, family, size_info
from fpt.models.weights import BackboneUnavailable, load_pretrained


def _attn_impl(hf_cls, output_attentions: bool) -> str | None:
    """SDPA where the model class supports it, except when attention maps are asked for (SDPA
    does not return them); None for our own modules (the LSTM)."""
    if not hasattr(hf_cls, "_supports_sdpa"):
        return None
    return "sdpa" if hf_cls._supports_sdpa and not output_attentions else "eager"


def build_backbone(
    backbone: str,
    size: str,
    init: str,
    depth: int | None = None,
    weights_dir: Path | None = None,
    output_attentions: bool = False,
    init_from: Path | None = None,
    random_init: str = "paper",
    backbone_dropout: float | None = None,
    lstm_cell: str = "reference",
) -> Backbone:
    """A backbone with `init` in fpt.models.init.INITS:
    - random: drawn per `random_init` (fpt.models.random_init) from the shipped config (no
      download);
    - pretrained: from_pretrained (weights dir, package, HF cache or hub;
      fpt.models.weights);
    - stats: pretrained, then every tensor redrawn to match its own mean and std;
    - bit_memory: random, then the backbone tensors of a finished Bit Memory run
      (`init_from`, a run folder; see fpt.models.init.load_bit_memory_backbone).
    Random draws come from the global torch RNG, so seed it first. `depth` keeps the first
    blocks (applied before bit_memory loading, whose source has the same depth).
    `backbone_dropout` and `lstm_cell`: the run settings of those names (fpt.spec)."""
    if init not in inits.INITS:
        raise ValueError(f"init={init!r}; use one of {', '.join(inits.INITS)}")
    fam, info = family(backbone), size_info(backbone, size)
    hf_cls = fam.model_class()
    extra = dict(fam.model_kwargs)
    impl = _attn_impl(hf_cls, output_attentions)
    overrides = fam.config_overrides(backbone_dropout, lstm_cell)
    if init in ("random", "bit_memory"):
        config = hf_cls.config_class.from_json_file(CONFIG_DIR / info.config)
        for key, value in overrides.items():
            setattr(config, key, value)
        if impl is not None:
            config._attn_implementation = impl
        model = hf_cls(config, **extra)
        if fam.name != "lstm":
            random_inits.apply(fam.name, model, random_init)
    else:
        kwargs = dict(extra, **overrides)
        if impl is not None:  # a transformers model
            # No hub kernels (transformers 5 swaps them in by default where the `kernels`
            # package is installed and the hub is reachable): a run's arithmetic must not
            # depend on the network, and a downloaded kernel has no vmap rule (fpt.fused).
            kwargs.update(attn_implementation=impl, use_kernels=False)
        model = load_pretrained(backbone, size, weights_dir, **kwargs)
        if init == "stats":
            inits.stats_init_(model)
    bb = fam.backbone_cls(model)
    if depth is not None:
        bb.truncate(depth)
    if init == "bit_memory":
        if init_from is None:
            raise BackboneUnavailable(
                "init=bit_memory needs the Bit Memory pretraining run: pass its run folder as "
                "--init-from (the workflow does; fpt.grid.bit_memory_source names the run)"
            )
        inits.load_bit_memory_backbone(bb, Path(init_from))
    return bb
