"""Official VITA-QinYu checkpoint folders: mapping their ``config.json`` to
``QinYuConfig``. Keys need no map for the parts built here (the module tree uses the
official names)."""

from __future__ import annotations

from ..layout import TokenLayout
from .config import ConfigError, QinYuConfig

# Fields of the official 8B config that belong to the Qwen3 backbone.
QWEN3_FIELDS = (
    "vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "initializer_range", "rms_norm_eps",
    "rope_theta", "rope_scaling", "attention_bias", "attention_dropout", "use_sliding_window", "sliding_window",
    "max_window_layers", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
)


def config_from_official(raw: dict, layout: TokenLayout) -> QinYuConfig:
    """``config.json`` of an official 8B folder (``qwen3_sensevoice_xy``) -> QinYuConfig."""
    model_type = raw.get("model_type")
    if model_type != "qwen3_sensevoice_xy":
        raise ConfigError(f"official model_type {model_type!r} is not supported here yet "
                          f"(supported: 'qwen3_sensevoice_xy')")
    if raw.get("num_nextn_predict_layers", 0) or raw.get("use_audio_heads", False) is None:
        raise ConfigError("official configs with MTP layers (num_nextn_predict_layers > 0) are not supported")
    backbone = {"model_type": "qwen3", **{k: raw[k] for k in QWEN3_FIELDS if k in raw}}
    norm = raw.get("audio_projection_norm_type", "layer_norm")
    return QinYuConfig(
        backbone=backbone,
        token_layout=layout.to_dict(),
        audio_encoder=None,
        audio_projection_norm_type=norm,
        speaker_projection_norm_type=norm,
        use_speaker_embedding=bool(raw.get("use_speaker_embedding", True)),
        speaker_embedding_size=int(raw.get("speaker_embedding_size", 192)),
        use_audio_heads=bool(raw.get("use_audio_heads", False)),
        trained=True,
        description=f"converted from an official {model_type} folder",
    )
