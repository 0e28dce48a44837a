"""Pluggable audio encoders: features of user speech -> frames of width 512.

Every encoder takes padded features ``[N, T, D]`` with lengths ``[N]`` and returns
``(frames [N, T', 512], lengths' [N])``; the number of ``<|context_of_audio|>``
placeholders for an utterance must equal its output length. ``output_frames(n)``
tells the layout that number without running the encoder.

Types are chosen by the ``audio_encoder`` config dict (``{"type": ..., **params}``):
``sensevoice`` (SenseVoiceSmall's SAN-M encoder, official sizes by default, any size by
config) and ``simple`` (a small Transformer over 560-d LFR features).
"""

from __future__ import annotations

import torch
from torch import nn

ENCODERS: dict[str, type] = {}


def register_encoder(name: str):
    def wrap(cls):
        ENCODERS[name] = cls
        return cls
    return wrap


def build_audio_encoder(cfg: dict) -> nn.Module:
    params = dict(cfg)
    kind = params.pop("type")
    if kind not in ENCODERS:
        raise ValueError(f"unknown audio encoder type {kind!r}; known: {sorted(ENCODERS)}")
    try:
        return ENCODERS[kind](**params)
    except TypeError as e:
        raise ValueError(f"audio encoder {kind!r}: bad parameters {params}: {e}") from None


@register_encoder("simple")
class SimpleAudioEncoder(nn.Module):
    """Linear in, a few Transformer encoder layers, Linear out; optional learned query
    frames prepended (SenseVoice prepends 4)."""

    def __init__(self, input_size: int = 560, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                 output_size: int = 512, num_query_frames: int = 0):
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.num_query_frames = num_query_frames
        self.input_proj = nn.Linear(input_size, hidden_size)
        self.queries = nn.Parameter(torch.randn(num_query_frames, hidden_size) * 0.02) if num_query_frames else None
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, 4 * hidden_size, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.output_proj = nn.Linear(hidden_size, output_size)

    def output_frames(self, num_feature_frames: int) -> int:
        return num_feature_frames + self.num_query_frames

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        if features.shape[-1] != self.input_size:
            raise ValueError(f"audio features must have {self.input_size} channels, got {features.shape[-1]}")
        x = self.input_proj(features)
        if self.queries is not None:
            x = torch.cat([self.queries.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            lengths = lengths + self.num_query_frames
        pad = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        x = self.layers(x, src_key_padding_mask=pad)
        return self.output_proj(x), lengths


@register_encoder("sensevoice")
def _sensevoice(**params):
    from ..audio.sensevoice import SenseVoiceSmall

    return SenseVoiceSmall(**params)


class AudioModel(nn.Module):
    """Holds the encoder as ``.model`` so keys read ``model.audio_model.model.*`` as in
    the official checkpoints."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.model = encoder

    def forward(self, features, lengths):
        return self.model(features, lengths)
