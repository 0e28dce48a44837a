"""The SenseVoiceSmall encoder (SAN-M): speech features -> 512-d frames for the LM.

Parameter names follow the official ``model.pt`` (``encoder.encoders0.0.*``,
``encoder.encoders.N.*``, ``encoder.tp_encoders.N.*``, ``encoder.after_norm``,
``encoder.tp_norm``, ``ctc.ctc_lo``, ``embed``), so it loads as it is, and sits under
``model.audio_model.model.`` in VITA-QinYu checkpoints.

Forward, as VITA calls it (``inference_encode`` with language "auto", no ITN): four
query vectors from ``embed`` ([language, event, emotion, text-norm] = [0, 1, 2, 15])
are put before the LFR features; the input is scaled by sqrt(d) and gets a sinusoidal
encoding of depth 560 with positions from 1; then ``encoders0`` (560 -> d, no residual
around its attention), the ``encoders`` and ``after_norm``, the ``tp_encoders`` and
``tp_norm``. The 8B keeps the 4 query frames, the 4B drops them (``keep_query_frames``).

The same architecture at a small size is qinyu-nano's audio encoder, trained from scratch
(``qinyu.model.presets``); for it, ``utterance_cmn`` (off in the official model) subtracts
each utterance's mean feature vector first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LANGUAGE_IDS = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
EVENT_ID, EMOTION_ID = 1, 2
WITH_ITN_ID, WITHOUT_ITN_ID = 14, 15
NUM_QUERY_FRAMES = 4


def sinusoid_encoding(positions: torch.Tensor, depth: int) -> torch.Tensor:
    """[T] positions -> [T, depth]: [sin | cos], log-timescale increment ln(10000)/(depth/2 - 1)."""
    increment = math.log(10000.0) / (depth / 2 - 1)
    inv = torch.exp(torch.arange(depth // 2, dtype=torch.float32) * -increment)
    t = positions.float()[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def utterance_mean_removed(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Padded features [B, T, D] minus each utterance's mean over its valid frames; padding
    stays zero. Removes much of what differs between voices and channels."""
    valid = (torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None])[..., None]
    valid = valid.to(features.dtype)
    mean = (features * valid).sum(1, keepdim=True) / lengths.clamp(min=1)[:, None, None].to(features.dtype)
    return (features - mean) * valid


class SANMAttention(nn.Module):
    """Multi-head self-attention plus an FSMN memory (a depthwise convolution over the
    values), as in SAN-M."""

    def __init__(self, in_size: int, size: int, heads: int, kernel_size: int = 11, sanm_shift: int = 0):
        super().__init__()
        self.heads, self.d_k = heads, size // heads
        self.linear_q_k_v = nn.Linear(in_size, 3 * size)
        self.linear_out = nn.Linear(size, size)
        self.fsmn_block = nn.Conv1d(size, size, kernel_size, groups=size, bias=False)
        left = (kernel_size - 1) // 2 + sanm_shift
        self.pad = (left, kernel_size - 1 - left)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x [B, T, in]; valid [B, T] bool."""
        b, t, _ = x.shape
        q, k, v = self.linear_q_k_v(x).chunk(3, dim=-1)
        keep = valid[..., None].to(x.dtype)
        masked_v = v * keep
        memory = self.fsmn_block(F.pad(masked_v.transpose(1, 2), self.pad)).transpose(1, 2)
        memory = (memory + masked_v) * keep

        def heads(y):
            return y.view(b, t, self.heads, self.d_k).transpose(1, 2)

        scores = (heads(q) * self.d_k ** -0.5) @ heads(k).transpose(-1, -2)
        pad = ~valid[:, None, None, :]
        attn = scores.masked_fill(pad, torch.finfo(scores.dtype).min).softmax(-1).masked_fill(pad, 0.0)
        out = (attn @ heads(v)).transpose(1, 2).reshape(b, t, -1)
        return self.linear_out(out) + memory


class FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def forward(self, x):
        return self.w_2(F.relu(self.w_1(x)))


class SANMLayer(nn.Module):
    """Pre-LayerNorm layer; the attention has no residual when it changes the width."""

    def __init__(self, in_size, size, heads, linear_units, kernel_size, sanm_shift):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_size)
        self.self_attn = SANMAttention(in_size, size, heads, kernel_size, sanm_shift)
        self.norm2 = nn.LayerNorm(size)
        self.feed_forward = FeedForward(size, linear_units)
        self.residual = in_size == size

    def forward(self, x, valid):
        y = self.self_attn(self.norm1(x), valid)
        x = x + y if self.residual else y
        return x + self.feed_forward(self.norm2(x))


class SenseVoiceEncoderSmall(nn.Module):
    def __init__(self, input_size=560, output_size=512, attention_heads=4, linear_units=2048, num_blocks=50,
                 tp_blocks=20, kernel_size=11, sanm_shfit=0):
        super().__init__()
        self.output_size = output_size
        args = (attention_heads, linear_units, kernel_size, sanm_shfit)
        self.encoders0 = nn.ModuleList([SANMLayer(input_size, output_size, *args)])
        self.encoders = nn.ModuleList(SANMLayer(output_size, output_size, *args) for _ in range(num_blocks - 1))
        self.after_norm = nn.LayerNorm(output_size)
        self.tp_encoders = nn.ModuleList(SANMLayer(output_size, output_size, *args) for _ in range(tp_blocks))
        self.tp_norm = nn.LayerNorm(output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, stages: dict | None = None) -> torch.Tensor:
        t = x.shape[1]
        valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]
        x = x * self.output_size ** 0.5
        x = x + sinusoid_encoding(torch.arange(1, t + 1, device=x.device), x.shape[-1]).to(x.device, x.dtype)
        if stages is not None:
            stages["after_posenc"] = x
        for layer in self.encoders0:
            x = layer(x, valid)
        if stages is not None:
            stages["encoders0"] = x
        for layer in self.encoders:
            x = layer(x, valid)
        x = self.after_norm(x)
        if stages is not None:
            stages["after_norm"] = x
        for layer in self.tp_encoders:
            x = layer(x, valid)
        return self.tp_norm(x)


class CTC(nn.Module):
    def __init__(self, size, vocab_size):
        super().__init__()
        self.ctc_lo = nn.Linear(size, vocab_size)


class SenseVoiceSmall(nn.Module):
    """Encoder + the (unused by VITA, kept for key compatibility) CTC head + query embeddings.

    ``forward(features [B, T, 560], lengths [B]) -> (frames [B, T', 512], lengths')``,
    T' = T + 4 with the query frames kept, T without."""

    def __init__(self, input_size=560, vocab_size=25055, output_size=512, attention_heads=4, linear_units=2048,
                 num_blocks=50, tp_blocks=20, kernel_size=11, sanm_shfit=0, keep_query_frames=True,
                 language="auto", use_itn=False, utterance_cmn=False):
        super().__init__()
        if language not in LANGUAGE_IDS:
            raise ValueError(f"SenseVoice language {language!r} is not one of {sorted(LANGUAGE_IDS)}")
        self.encoder = SenseVoiceEncoderSmall(input_size, output_size, attention_heads, linear_units, num_blocks,
                                              tp_blocks, kernel_size, sanm_shfit)
        self.ctc = CTC(output_size, vocab_size)
        self.embed = nn.Embedding(16, input_size)
        self.input_size = input_size
        self.output_size = output_size
        self.keep_query_frames = keep_query_frames
        self.utterance_cmn = utterance_cmn
        self.query_ids = [LANGUAGE_IDS[language], EVENT_ID, EMOTION_ID, WITH_ITN_ID if use_itn else WITHOUT_ITN_ID]
        self.num_query_frames = NUM_QUERY_FRAMES if keep_query_frames else 0

    def output_frames(self, num_feature_frames: int) -> int:
        return num_feature_frames + self.num_query_frames

    def encode(self, features: torch.Tensor, lengths: torch.Tensor, query_ids=None, stages=None):
        """All frames, query frames included: ([B, T + 4, d], lengths + 4)."""
        if features.shape[-1] != self.input_size:
            raise ValueError(f"SenseVoice features must have {self.input_size} channels, got {features.shape[-1]}")
        if self.utterance_cmn:
            features = utterance_mean_removed(features, lengths)
        ids = torch.tensor(query_ids or self.query_ids, device=features.device)
        queries = self.embed(ids).to(features.dtype)[None].expand(features.shape[0], -1, -1)
        x = torch.cat([queries, features], dim=1)
        lengths = lengths + NUM_QUERY_FRAMES
        if stages is not None:
            stages["encoder_input"] = x
        return self.encoder(x, lengths, stages), lengths

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        out, lengths = self.encode(features, lengths)
        if not self.keep_query_frames:
            out, lengths = out[:, NUM_QUERY_FRAMES:], lengths - NUM_QUERY_FRAMES
        return out, lengths


PUBLISHED = "FunAudioLLM/SenseVoiceSmall (model.pt, config.yaml, am.mvn)"


def load_sensevoice(directory, keep_query_frames: bool = True, language: str = "auto",
                    use_itn: bool = False) -> SenseVoiceSmall:
    """Load an official SenseVoiceSmall folder: ``config.yaml`` (``encoder_conf``,
    ``input_size``, ``vocab_size`` when given) and ``model.pt`` (a torch pickle, the
    state dict bare or under ``state_dict``)."""
    from pathlib import Path

    import yaml

    directory = Path(directory)
    weights = directory / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"SenseVoiceSmall weights not found: {weights}; published as {PUBLISHED}")
    conf = {}
    if (directory / "config.yaml").is_file():
        conf = yaml.safe_load((directory / "config.yaml").read_text()) or {}
    enc = dict(conf.get("encoder_conf") or {})
    kwargs = {k: enc[k] for k in ("output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks",
                                  "kernel_size", "sanm_shfit") if k in enc}
    for k in ("input_size", "vocab_size"):
        if k in conf:
            kwargs[k] = conf[k]
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if "vocab_size" not in kwargs and "ctc.ctc_lo.weight" in state:
        kwargs["vocab_size"] = state["ctc.ctc_lo.weight"].shape[0]
    model = SenseVoiceSmall(keep_query_frames=keep_query_frames, language=language, use_itn=use_itn, **kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()
