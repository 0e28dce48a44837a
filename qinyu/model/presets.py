"""Ready-made configs. ``tiny``: a few-hundred-thousand-parameter Qwen3 backbone with
the byte-level tokenizer and a small audio encoder, randomly initialised, for tests,
benchmarks and wiring the engine and server before a trained model exists."""

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


PRESETS = {"tiny": _tiny}


def preset_config(name: str, layout: TokenLayout) -> QinYuConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](layout)


def new_checkpoint(out, preset: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised checkpoint (config, weights, tokenizer) to ``out``."""
    from .modeling import QinYuForConditionalGeneration

    tokenizer = byte_tokenizer()
    config = preset_config(preset, TokenLayout.from_tokenizer(tokenizer))
    torch.manual_seed(seed)
    model = QinYuForConditionalGeneration(config)
    return model.save_pretrained(out, tokenizer=tokenizer)
