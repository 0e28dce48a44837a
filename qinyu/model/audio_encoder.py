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

from ..audio.sensevoice import utterance_mean_removed

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
    frames prepended (SenseVoice prepends 4).

    Options for an encoder trained from scratch (qinyu-nano), all off by default:
    ``utterance_cmn`` subtracts each utterance's mean feature vector (removes much of
    what differs between voices and channels), ``conv_kernel`` adds a depthwise
    convolution over time after the input projection (local context), ``max_positions``
    adds learned absolute positions (a Transformer layer alone has no notion of order),
    ``dropout`` applies inside the layers while training."""

    def __init__(self, input_size: int = 560, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                 output_size: int = 512, num_query_frames: int = 0, utterance_cmn: bool = False,
                 conv_kernel: int = 0, max_positions: int = 0, dropout: float = 0.0):
        super().__init__()
        self.input_size = input_size
        self.output_size = output_size
        self.num_query_frames = num_query_frames
        self.utterance_cmn = utterance_cmn
        self.max_positions = max_positions
        self.input_proj = nn.Linear(input_size, hidden_size)
        if conv_kernel:
            if conv_kernel % 2 == 0:
                raise ValueError(f"conv_kernel must be odd (same length out), got {conv_kernel}")
            self.conv = nn.Conv1d(hidden_size, hidden_size, conv_kernel, padding=conv_kernel // 2, groups=hidden_size)
        else:
            self.conv = None
        self.positions = nn.Parameter(torch.randn(max_positions, hidden_size) * 0.02) if max_positions else None
        self.queries = nn.Parameter(torch.randn(num_query_frames, hidden_size) * 0.02) if num_query_frames else None
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, 4 * hidden_size, dropout=dropout, batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.output_proj = nn.Linear(hidden_size, output_size)

    def output_frames(self, num_feature_frames: int) -> int:
        return num_feature_frames + self.num_query_frames

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        if features.shape[-1] != self.input_size:
            raise ValueError(f"audio features must have {self.input_size} channels, got {features.shape[-1]}")
        valid = torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]
        if self.utterance_cmn:
            features = utterance_mean_removed(features, lengths)
        x = self.input_proj(features)
        if self.conv is not None:
            x = x + nn.functional.gelu(self.conv((x * valid[..., None]).transpose(1, 2)).transpose(1, 2))
        if self.positions is not None:
            if x.shape[1] > self.max_positions:
                raise ValueError(f"{x.shape[1]} feature frames exceed the encoder's {self.max_positions} positions "
                                 f"({self.max_positions * 0.06:.0f} s of speech)")
            x = x + self.positions[: x.shape[1]].to(x.dtype)
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
