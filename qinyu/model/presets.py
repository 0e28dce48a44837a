"""Ready-made configs, randomly initialised.

* ``tiny``: a few-hundred-thousand-parameter Qwen3 backbone with the byte-level
  tokenizer and a small audio encoder, for tests, benchmarks and wiring.
* ``nano``: the qinyu-nano model trained by ``make speedrun`` (a ~6 M-parameter Qwen3
  backbone, 4 layers of width 192, and a from-scratch audio encoder with per-utterance
  mean normalisation, a convolution and positions), sized to train in under half an
  hour on 2 CPU cores; meant for a small BPE tokenizer (``bpe_tokenizer``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..layout import TokenLayout, byte_tokenizer
from .config import QinYuConfig


def _tiny(layout: TokenLayout) -> QinYuConfig:
    return QinYuConfig(
        backbone={
            "model_type": "qwen3",
            "vocab_size": layout.vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
            "tie_word_embeddings": False,
            "initializer_range": 0.02,
            "bos_token_id": None,
            "eos_token_id": layout.im_end,
            "pad_token_id": None,
        },
        token_layout=layout.to_dict(),
        audio_encoder={"type": "simple", "input_size": 560, "hidden_size": 64, "num_layers": 2, "num_heads": 4,
                       "output_size": 512, "num_query_frames": 0},
        audio_projection_norm_type="layer_norm",
        speaker_projection_norm_type="layer_norm",
        trained=False,
        description="tiny preset: random initialisation, untrained; for tests and wiring only",
    )


def _nano(layout: TokenLayout) -> QinYuConfig:
    config = _tiny(layout)
    # rope_theta 10,000 (not Qwen3's 1e6): with 16 frequency pairs per head, 1e6 leaves only a few
    # that turn within a few hundred tokens, and finding the frames a word came from is positional
    config.backbone.update(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
                           num_key_value_heads=2, head_dim=32, rope_theta=10000.0)
    config.audio_encoder = {"type": "simple", "input_size": 560, "hidden_size": 192, "num_layers": 4, "num_heads": 4,
                            "output_size": 512, "num_query_frames": 0, "utterance_cmn": True, "conv_kernel": 5,
                            "max_positions": 1024, "dropout": 0.1}
    config.description = "nano preset: random initialisation, untrained"
    return config


PRESETS = {"tiny": _tiny, "nano": _nano}


def preset_config(name: str, layout: TokenLayout) -> QinYuConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](layout)


def new_checkpoint(out, preset: str = "tiny", seed: int = 0, tokenizer=None,
                   audio_output_size: int | None = None) -> Path:
    """Write a randomly initialised checkpoint (config, weights, tokenizer) to ``out``;
    ``tokenizer`` (an extended ``tokenizers.Tokenizer``) defaults to the byte-level one.
    ``audio_output_size`` overrides the audio encoder's output width (what the audio
    projector reads): the nano speedrun makes it the CTC classes, text tokens + blank."""
    from .modeling import QinYuForConditionalGeneration

    tokenizer = tokenizer or byte_tokenizer()
    config = preset_config(preset, TokenLayout.from_tokenizer(tokenizer))
    if audio_output_size is not None:
        if not config.audio_encoder:
            raise ValueError(f"preset {preset!r} has no audio encoder to set an output size for")
        config.audio_encoder["output_size"] = audio_output_size
        config.audio_encoder_output_size = audio_output_size
    torch.manual_seed(seed)
    model = QinYuForConditionalGeneration(config)
    return model.save_pretrained(out, tokenizer=tokenizer)
