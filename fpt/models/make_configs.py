"""Regenerate the shipped architecture configs (fpt/models/configs/*.json) from the HF config
classes and the public hyperparameters of each checkpoint. No download: the numbers below are
the published architecture of each model (its hub config.json), written out by hand.

    python -m fpt.models.make_configs

GPT-2 and MiniLM configs were written before this script and are left as they are.
"""

from __future__ import annotations

import json

from fpt.models.families import CONFIG_DIR

TINY = {"hidden": 64, "layers": 2, "heads": 4, "ff": 256}


def _hf_configs() -> dict[str, object]:
    from transformers import BertConfig, LongformerConfig, T5Config, ViTConfig

    # ViT-B/16 (google/vit-base-patch16-224: ImageNet-21k pretraining, ImageNet-1k fine-tune
    # at 224, the same weights timm's vit_base_patch16_224 carried in 2021).
    vit = dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        image_size=224,
        patch_size=16,
        num_channels=3,
        qkv_bias=True,
    )
    # bert-base-uncased
    bert = dict(
        vocab_size=30522,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=512,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    # t5-base (the encoder stack is what T5EncoderModel builds)
    t5 = dict(
        vocab_size=32128,
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_decoder_layers=12,
        num_heads=12,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.1,
        layer_norm_epsilon=1e-6,
        initializer_factor=1.0,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    # allenai/longformer-base-4096: BERT-base's shape with RoBERTa's vocabulary and ids, 4098
    # positions, a 512-token window
    longformer = {
        **bert,
        "vocab_size": 50265,
        "max_position_embeddings": 4098,
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,
        "attention_window": [512] * 12,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "sep_token_id": 2,
    }
    t = TINY
    # the tiny test size of a BERT-like config (BERT, ViT, Longformer share the key names)
    tiny = {
        "hidden_size": t["hidden"],
        "num_hidden_layers": t["layers"],
        "num_attention_heads": t["heads"],
        "intermediate_size": t["ff"],
    }
    return {
        "vit-b16.json": ViTConfig(**vit),
        "vit-tiny.json": ViTConfig(**{**vit, **tiny, "image_size": 32}),
        "bert-base.json": BertConfig(**bert),
        "bert-tiny.json": BertConfig(**{**bert, **tiny, "vocab_size": 64}),
        "t5-base.json": T5Config(**t5),
        "t5-tiny.json": T5Config(
            **{
                **t5,
                "vocab_size": 64,
                "d_model": t["hidden"],
                "d_kv": t["hidden"] // t["heads"],
                "d_ff": t["ff"],
                "num_layers": t["layers"],
                "num_decoder_layers": t["layers"],
                "num_heads": t["heads"],
            }
        ),
        "longformer-base.json": LongformerConfig(**longformer),
        # A small window (8) so that tests exercise the window padding/shrinking logic.
        "longformer-tiny.json": LongformerConfig(
            **{
                **longformer,
                **tiny,
                "vocab_size": 64,
                "attention_window": [8] * t["layers"],
                "max_position_embeddings": 1026,
            }
        ),
    }


def _lstm_configs() -> dict[str, dict]:
    from fpt.models.lstm import LSTM_SIZES

    return {f"lstm-{name}.json": cfg for name, cfg in LSTM_SIZES.items()}


def main() -> None:
    for name, cfg in _hf_configs().items():
        cfg.to_json_file(CONFIG_DIR / name)
    for name, cfg in _lstm_configs().items():
        (CONFIG_DIR / name).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        print(name)


if __name__ == "__main__":
    main()
