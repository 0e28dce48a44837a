"""Official VITA-QinYu folders: their ``config.json`` mapped to ``QinYuConfig`` and their
weight keys mapped to qinyu's (identical names; only leftovers are dropped).

* 8B ``qwen3_sensevoice_xy``: Qwen3 backbone, LayerNorm in both projectors, SenseVoice
  query frames kept.
* 4B ``vita_utu_v1``: Youtu MLA backbone (transformers' ``youtu``), tied embeddings,
  RMSNorm(eps=None) in the audio projector always and in the speaker projector per
  config, SenseVoice query frames dropped. Its config declares fewer key-value heads
  than heads, which only the reference's flash-attention path tolerates; multi-head
  latent attention has no key-value grouping, so the backbone gets
  ``num_key_value_heads = num_attention_heads`` and works with eager, SDPA and flash.
"""

from __future__ import annotations

import re

from ..layout import TokenLayout
from .config import ConfigError, QinYuConfig

OFFICIAL_MODEL_TYPES = {"qwen3_sensevoice_xy": "VITA-QinYu-8B", "vita_utu_v1": "VITA-QinYu-4B"}

COMMON_FIELDS = (
    "vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "hidden_act", "initializer_range", "rms_norm_eps", "rope_theta", "rope_scaling",
    "attention_bias", "attention_dropout", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
)
QWEN3_FIELDS = COMMON_FIELDS + (
    "num_key_value_heads", "head_dim", "use_sliding_window", "sliding_window", "max_window_layers",
)
YOUTU_FIELDS = COMMON_FIELDS + (
    "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "v_head_dim", "qk_nope_head_dim", "rope_interleave",
    "embedding_initializer_range",
)
AUDIO_MODEL_PREFIX = "model.audio_model."


def is_official(raw) -> bool:
    return isinstance(raw, dict) and raw.get("model_type") in OFFICIAL_MODEL_TYPES


def config_from_official(raw: dict, layout: TokenLayout, has_audio_model: bool = False) -> QinYuConfig:
    """An official ``config.json`` -> QinYuConfig.

    ``has_audio_model``: the folder's weights hold the SenseVoice encoder
    (``model.audio_model.model.*``), as the released checkpoints do."""
    model_type = raw.get("model_type")
    if model_type not in OFFICIAL_MODEL_TYPES:
        raise ConfigError(f"unknown official model_type {model_type!r}; known: {sorted(OFFICIAL_MODEL_TYPES)}")
    if raw.get("num_nextn_predict_layers", 0):
        raise ConfigError("official configs with MTP layers (num_nextn_predict_layers > 0) are not supported; "
                          "no released checkpoint uses them")
    speaker_norm = raw.get("audio_projection_norm_type", "layer_norm")
    if model_type == "qwen3_sensevoice_xy":
        backbone = {"model_type": "qwen3", **{k: raw[k] for k in QWEN3_FIELDS if k in raw}}
        audio_norm, keep_query_frames = speaker_norm, True
    else:
        layers = raw.get("num_hidden_layers")
        if raw.get("first_k_dense_replace", layers) < layers or raw.get("n_routed_experts"):
            raise ConfigError("official 4B configs with mixture-of-experts layers are not supported "
                              "(first_k_dense_replace < num_hidden_layers)")
        backbone = {"model_type": "youtu", **{k: raw[k] for k in YOUTU_FIELDS if k in raw}}
        backbone["num_key_value_heads"] = raw["num_attention_heads"]  # MLA: no key-value grouping
        audio_norm, keep_query_frames = "rms_norm", False  # the 4B audio projector ignores the config
    audio_encoder = None
    if has_audio_model:
        audio_encoder = {"type": "sensevoice", "keep_query_frames": keep_query_frames}
    return QinYuConfig(
        backbone=backbone,
        token_layout=layout.to_dict(),
        audio_encoder=audio_encoder,
        audio_projection_norm_type=audio_norm,
        speaker_projection_norm_type=speaker_norm,
        use_speaker_embedding=bool(raw.get("use_speaker_embedding", True)),
        speaker_embedding_size=int(raw.get("speaker_embedding_size", 192)),
        use_audio_heads=bool(raw.get("use_audio_heads", False)),
        trained=True,
        description=f"{OFFICIAL_MODEL_TYPES[model_type]} (converted from an official {model_type} folder)",
    )


_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def map_official_key(key: str, num_layers: int) -> str | None:
    """Official key -> qinyu key, or None for keys the reference itself ignores
    (layers past ``num_hidden_layers`` such as the 4B's ``model.layers.61.*``, and the
    non-persistent rotary buffer)."""
    m = _LAYER.match(key)
    if m and int(m.group(1)) >= num_layers:
        return None
    if key.endswith("rotary_emb.inv_freq"):
        return None
    return key
