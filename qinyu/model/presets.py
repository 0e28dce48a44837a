"""Ready-made configs, randomly initialised.

* ``tiny``: a few-hundred-thousand-parameter Qwen3 backbone with the byte-level
  tokenizer and a small audio encoder, for tests, benchmarks and wiring.
* ``nano``: the qinyu-nano model trained by ``make speedrun`` (a ~6 M-parameter Qwen3
  backbone, 4 layers of width 192, and a from-scratch audio encoder: SenseVoiceSmall's
  SAN-M architecture at 4 blocks of width 192, with per-utterance mean normalisation and a
  CTC head over the text tokens), sized to train in under half an hour on 2 CPU cores;
  meant for a small BPE tokenizer (``bpe_tokenizer``). ``NANO_SIMPLE_ENCODER`` is the
  encoder earlier nano runs used (docs/nano.md)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..layout import TokenLayout, byte_tokenizer
from .config import QinYuConfig


# every preset takes the CTC classes (preset_config); tiny's encoder has no CTC head and ignores them
def _tiny(layout: TokenLayout, ctc_classes: int | None = None) -> QinYuConfig:
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


# the nano encoder before SAN-M: a plain Transformer with the same width; greedy CTC on the
# held-out ASR utterances after 600 steps: 54.6 % CER against 41.8 % for SAN-M (docs/nano.md)
NANO_SIMPLE_ENCODER = {"type": "simple", "input_size": 560, "hidden_size": 192, "num_layers": 4, "num_heads": 4,
                       "output_size": 512, "num_query_frames": 0, "utterance_cmn": True, "conv_kernel": 5,
                       "max_positions": 1024, "dropout": 0.1}


def _nano(layout: TokenLayout, ctc_classes: int | None = None) -> QinYuConfig:
    if ctc_classes is None:
        raise ValueError("the nano preset's audio encoder has a CTC head over the text tokens: pass ctc_classes "
                         "(the tokenizer's base vocabulary + 1 for the blank)")
    config = _tiny(layout)
    # rope_theta 10,000 (not Qwen3's 1e6): with 16 frequency pairs per head, 1e6 leaves only a few
    # that turn within a few hundred tokens, and finding the frames a word came from is positional
    config.backbone.update(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
                           num_key_value_heads=2, head_dim=32, rope_theta=10000.0)
    # SenseVoiceSmall's own architecture (SAN-M: attention plus an FSMN memory, a depthwise
    # convolution of 11 frames, in every block), small; no query frames (nothing asks for a
    # language or an emotion); its CTC head is trained by qinyu.train.encoder_ctc
    config.audio_encoder = {"type": "sensevoice", "input_size": 560, "output_size": 192, "attention_heads": 4,
                            "linear_units": 768, "num_blocks": 4, "tp_blocks": 0, "vocab_size": ctc_classes,
                            "keep_query_frames": False, "utterance_cmn": True}
    config.audio_encoder_output_size = 192
    config.description = "nano preset: random initialisation, untrained"
    return config


PRESETS = {"tiny": _tiny, "nano": _nano}


def preset_config(name: str, layout: TokenLayout, ctc_classes: int | None = None) -> QinYuConfig:
    """``ctc_classes`` (text tokens + blank) sizes the CTC head of an encoder that has one (nano)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](layout, ctc_classes)


def ctc_classes(tokenizer) -> int:
    """The CTC classes of a recogniser over ``tokenizer``'s text: its base tokens (no specials,
    no audio tokens) and the blank, which is the last class."""
    return tokenizer.get_vocab_size(with_added_tokens=False) + 1


def new_checkpoint(out, preset: str = "tiny", seed: int = 0, tokenizer=None, audio_encoder: dict | None = None,
                   audio_output_size: int | None = None) -> Path:
    """Write a randomly initialised checkpoint (config, weights, tokenizer) to ``out``;
    ``tokenizer`` (an extended ``tokenizers.Tokenizer``) defaults to the byte-level one.
    ``audio_encoder`` replaces the preset's audio encoder config (its ``output_size`` is then
    what the audio projector reads); ``audio_output_size`` overrides that width (the nano
    speedrun's ``encoder_emits_ctc`` makes a simple encoder's output the CTC classes)."""
    from .modeling import QinYuForConditionalGeneration

    tokenizer = tokenizer or byte_tokenizer()
    config = preset_config(preset, TokenLayout.from_tokenizer(tokenizer), ctc_classes(tokenizer))
    if audio_encoder is not None:
        config.audio_encoder = dict(audio_encoder)
        config.audio_encoder_output_size = audio_encoder.get("output_size", 512)
    if audio_output_size is not None:
        if not config.audio_encoder:
            raise ValueError(f"preset {preset!r} has no audio encoder to set an output size for")
        config.audio_encoder["output_size"] = audio_output_size
        config.audio_encoder_output_size = audio_output_size
    torch.manual_seed(seed)
    model = QinYuForConditionalGeneration(config)
    return model.save_pretrained(out, tokenizer=tokenizer)
