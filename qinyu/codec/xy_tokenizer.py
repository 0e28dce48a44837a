"""XY-Tokenizer: the official VITA-QinYu speech codec (16 kHz in, 8 x 1024 codes at
12.5 Hz, 32 kHz out in the variant VITA-QinYu uses; 16 and 24 kHz variants differ only
in the vocoder head). Module and parameter names follow the official ``xy_tokenizer.ckpt``
so its state dict loads as it is.

Encode path: Whisper-style log-mel (80 bins, 30 s windows) -> semantic and acoustic
encoders (Whisper-style Transformers) and adapters -> 4x residual down-convolution ->
residual VQ (8 codebooks, weight-normed projections). Decode path: codebook sum ->
post-RVQ adapter -> 4x up-convolution -> acoustic decoder (Transformer + transposed
convolutions to 100 Hz mel-like features) -> Vocos (ConvNeXt backbone, ISTFT head).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio.io import check_waveform, resample
from .base import CODEC_CONFIG, Codec, CodecError, register_codec

WINDOW_SAMPLES = 480_000  # 30 s at 16 kHz: every encoder input is padded to this
ENCODE_STRIDE_SAMPLES = 320_000  # 30 s windows every 20 s; each keeps its first 20 s of codes
DECODE_WINDOW_CODES = 375  # 30 s of codes
DECODE_KEEP_CODES = 250  # windows every 250 codes, each keeps its first 250


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's fixed positions: [sin | cos], increment ln(10000) / (channels/2 - 1)."""
    increment = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """[B, size] True on valid frames."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class Attention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape

        def split(y):
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q = split(self.q_proj(x) * self.head_dim ** -0.5)
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        scores = q @ k.transpose(-1, -2)
        if valid is not None:
            scores = scores.masked_fill(~valid[:, None, None, :], torch.finfo(scores.dtype).min)
        out = scores.softmax(-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, t, c))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm Whisper encoder layer."""

    def __init__(self, d_model: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = Attention(d_model, heads)
        self.self_attn_layer_norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, ffn)
        self.fc2 = nn.Linear(ffn, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model)

    def forward(self, x, valid):
        x = x + self.self_attn(self.self_attn_layer_norm(x), valid)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class TransformerStack(nn.Module):
    """Positions + layers + final LayerNorm; padded frames zeroed. Channel-first in and out."""

    def __init__(self, d_model, heads, ffn, layers, max_positions):
        super().__init__()
        self.register_buffer("positional_embedding", sinusoids(max_positions, d_model))
        self.layers = nn.ModuleList(TransformerLayer(d_model, heads, ffn) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(d_model)

    def run(self, x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """x [B, T, C] time-major."""
        t = x.shape[1]
        if t > self.positional_embedding.shape[0]:
            raise CodecError(f"{t} frames exceed the {self.positional_embedding.shape[0]} positions of this layer")
        x = x + self.positional_embedding[:t].to(x.dtype)
        valid = length_mask(lengths, t) if lengths is not None else None
        for layer in self.layers:
            x = layer(x, valid)
        x = self.layer_norm(x)
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)
        return x


class AudioEncoder(TransformerStack):
    """Whisper-style encoder: two convolutions (100 -> 50 Hz), positions, layers."""

    def __init__(self, num_mel_bins=80, d_model=768, encoder_layers=12, encoder_attention_heads=12,
                 encoder_ffn_dim=3072, kernel_size=3, stride_size=2, max_audio_seconds=30, hop_length=160,
                 sampling_rate=16000, **_):
        max_positions = int(max_audio_seconds * sampling_rate / hop_length / stride_size)
        super().__init__(d_model, encoder_attention_heads, encoder_ffn_dim, encoder_layers, max_positions)
        self.conv1 = nn.Conv1d(num_mel_bins, d_model, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size, stride=stride_size, padding=kernel_size // 2)
        self.stride = stride_size

    def forward(self, mel, mel_lengths):
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel))))
        lengths = (mel_lengths - 1) // self.stride + 1
        return self.run(x.transpose(1, 2), lengths).transpose(1, 2), lengths


class Adapter(TransformerStack):
    """Transformer adapter with optional input and output projections."""

    def __init__(self, input_dim, output_dim, d_model, encoder_layers, encoder_attention_heads, encoder_ffn_dim,
                 max_source_positions, **_):
        super().__init__(d_model, encoder_attention_heads, encoder_ffn_dim, encoder_layers, max_source_positions)
        self.proj = nn.Linear(input_dim, d_model) if input_dim != d_model else None
        self.out_proj = nn.Linear(d_model, output_dim) if output_dim != d_model else None

    def forward(self, x, lengths):
        x = x.transpose(1, 2)
        if self.proj is not None:
            x = self.proj(x)
        x = self.run(x, lengths)
        if self.out_proj is not None:
            x = self.out_proj(x)
            if lengths is not None:
                x = x * length_mask(lengths, x.shape[1])[..., None].to(x.dtype)
        return x.transpose(1, 2), lengths


class ResidualDownConv(nn.Module):
    """4x down-sampling: gated convolution plus the stacked input frames, LayerNorm."""

    def __init__(self, d_model=768, avg_pooler=4):
        super().__init__()
        self.factor = avg_pooler
        wide = d_model * avg_pooler
        self.gate_proj = nn.Conv1d(d_model, wide, avg_pooler, stride=avg_pooler, bias=False)
        self.up_proj = nn.Conv1d(d_model, wide, avg_pooler, stride=avg_pooler, bias=False)
        self.down_proj = nn.Linear(wide, wide, bias=False)
        self.layer_norm = nn.LayerNorm(wide)

    def forward(self, x, lengths):
        b, c, t = x.shape
        pad = (-t) % self.factor
        if pad:
            x = F.pad(x, (0, pad))
        gated = (F.silu(self.gate_proj(x)) * self.up_proj(x)).transpose(1, 2)
        stacked = x.transpose(1, 2).reshape(b, -1, c * self.factor)  # 4 frames of c channels each
        out = self.layer_norm(self.down_proj(gated) + stacked).transpose(1, 2)
        return out, (lengths + self.factor - 1) // self.factor


class WeightNormConv1d(nn.Module):
    """A 1x1 convolution with old-style weight norm (``weight_g``, ``weight_v``)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(cout, 1, 1))
        self.weight_v = nn.Parameter(torch.randn(cout, cin, 1) / math.sqrt(cin))
        self.bias = nn.Parameter(torch.zeros(cout))

    def forward(self, x):
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=(1, 2), keepdim=True)
        return F.conv1d(x, weight, self.bias)


class VectorQuantize(nn.Module):
    def __init__(self, codebook_size, dim):
        super().__init__()
        self.register_buffer("codebook", torch.zeros(codebook_size, dim))
        self.register_buffer("inited", torch.tensor([True]))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_avg", torch.zeros(codebook_size, dim))

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, D] -> indices by squared L2 distance in fp32."""
        x = x.float()
        cb = self.codebook.float()
        dist = (x * x).sum(1, keepdim=True) - 2 * x @ cb.T + (cb * cb).sum(1)[None, :]
        return dist.argmin(1)


class ResidualVQ(nn.Module):
    def __init__(self, input_dim=3072, rvq_dim=512, output_dim=3072, num_quantizers=8, codebook_size=1024,
                 codebook_dim=512, **_):
        super().__init__()
        if codebook_dim != rvq_dim:
            raise CodecError("XY-Tokenizer configs with codebook_dim != rvq_dim are not supported")
        self.input_proj = WeightNormConv1d(input_dim, rvq_dim)
        self.quantizers = nn.ModuleList(VectorQuantize(codebook_size, codebook_dim) for _ in range(num_quantizers))
        self.output_proj = WeightNormConv1d(rvq_dim, output_dim)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x [B, C, T] -> codes [Q, B, T]."""
        z = self.input_proj(x).float()
        b, d, t = z.shape
        valid = length_mask(lengths, t)[:, None, :].to(z.dtype)
        residual = z
        codes = []
        for vq in self.quantizers:
            idx = vq.nearest(residual.transpose(1, 2).reshape(-1, d)).view(b, t)
            quant = vq.codebook[idx].transpose(1, 2).to(z.dtype)
            residual = residual - quant * valid
            codes.append(idx)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [Q, B, T] -> [B, C, T]."""
        z = sum(vq.codebook[c] for vq, c in zip(self.quantizers, codes)).transpose(1, 2)
        return self.output_proj(z.to(self.output_proj.weight_v.dtype))


class UpConv(nn.Module):
    def __init__(self, d_model=768, stride=4):
        super().__init__()
        self.up_conv = nn.ConvTranspose1d(d_model * stride, d_model, stride, stride=stride, bias=False)

    def forward(self, x):
        return self.up_conv(x)


class AudioDecoder(TransformerStack):
    """Transformer at 50 Hz, then transposed convolutions to 80-d features at 100 Hz."""

    def __init__(self, num_mel_bins=80, d_model=768, decoder_layers=12, decoder_attention_heads=12,
                 decoder_ffn_dim=3072, kernel_size=3, stride_size=2, max_audio_seconds=30, hop_length=160,
                 sampling_rate=16000, **_):
        max_positions = int(max_audio_seconds * sampling_rate / hop_length / stride_size)
        super().__init__(d_model, decoder_attention_heads, decoder_ffn_dim, decoder_layers, max_positions)
        self.deconv1 = nn.ConvTranspose1d(d_model, d_model, kernel_size, stride=stride_size)
        self.deconv2 = nn.ConvTranspose1d(d_model, num_mel_bins, kernel_size, stride=1)
        self.stride = stride_size

    def forward(self, x, lengths):
        t = x.shape[-1]
        x = self.run(x.transpose(1, 2), lengths).transpose(1, 2)
        x = F.gelu(self.deconv2(F.gelu(self.deconv1(x))))
        return x[..., :self.stride * t]


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, intermediate_dim):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        y = self.dwconv(x).transpose(1, 2)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, input_channels, dim, intermediate_dim, num_layers):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.convnext = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim) for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, valid: torch.Tensor | None = None):
        """``valid`` [B, T]: frames past an item's end are zeroed before every convolution,
        so a padded batch sees the same zero padding as a lone sequence."""
        def masked(y):
            return y if valid is None else y * valid[:, None, :].to(y.dtype)

        x = self.norm(self.embed(masked(x)).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(masked(x))
        return self.final_layer_norm(x.transpose(1, 2))  # [B, T, dim]


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding: (n_fft - hop) / 2 trimmed per side, divided by
    the squared-window envelope; T frames give T * hop samples."""

    def __init__(self, n_fft, hop):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec [B, n_fft/2+1, T] complex -> [B, T * hop]."""
        b, _, t = spec.shape
        frames = torch.fft.irfft(spec, self.n_fft, dim=1) * self.window[None, :, None]
        size = (t - 1) * self.hop + self.n_fft
        pad = (self.n_fft - self.hop) // 2
        y = F.fold(frames, (1, size), (1, self.n_fft), stride=(1, self.hop))[:, 0, 0, pad:size - pad]
        env = F.fold(self.window.square()[None, :, None].expand(1, -1, t), (1, size), (1, self.n_fft),
                     stride=(1, self.hop))[0, 0, 0, pad:size - pad]
        return y / env.clamp(min=1e-11)


class VocosHead(nn.Module):
    def __init__(self, dim, n_fft, hop):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop)

    def forward(self, x):
        x = self.out(x).float().transpose(1, 2)  # the spectrum and the ISTFT run in fp32
        mag, phase = x.chunk(2, dim=1)
        mag = torch.exp(mag).clamp(max=1e2)
        return self.istft(mag * torch.exp(1j * phase))


class Vocos(nn.Module):
    def __init__(self, input_channels=80, dim=512, intermediate_dim=4096, num_layers=30, n_fft=1280, hop_size=320,
                 padding="same"):
        super().__init__()
        if padding != "same":
            raise CodecError(f"Vocos padding {padding!r} is not supported (only 'same')")
        self.backbone = VocosBackbone(input_channels, dim, intermediate_dim, num_layers)
        self.head = VocosHead(dim, n_fft, hop_size)

    def forward(self, x):
        return self.head(self.backbone(x))


class MelFrontEnd:
    """Whisper-style log-mel: STFT (n_fft 400, hop 160, periodic Hann, centred, reflect),
    last frame dropped, 80 Slaney mel bins 0-8 kHz, log10 floored at 1e-10, clamped to
    max - 8, then (x + 4) / 4. Inputs are zero-padded to 30 s."""

    def __init__(self, feature_size=80, n_fft=400, hop_length=160, sampling_rate=16000, n_samples=WINDOW_SAMPLES,
                 **_):
        from transformers.audio_utils import mel_filter_bank

        self.n_fft, self.hop, self.n_samples = n_fft, hop_length, n_samples
        self.filters = torch.from_numpy(mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1, num_mel_filters=feature_size, min_frequency=0.0,
            max_frequency=sampling_rate / 2, sampling_rate=sampling_rate, norm="slaney", mel_scale="slaney",
        )).float()
        self.window = torch.hann_window(n_fft)

    def __call__(self, wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """list of 1-D float waveforms (<= 30 s) -> (mel [B, 80, 3000], mel lengths [B])."""
        batch = torch.zeros(len(wavs), self.n_samples)
        lengths = []
        for i, w in enumerate(wavs):
            batch[i, :len(w)] = w
            lengths.append(-(-len(w) // self.hop))  # the sample mask taken every hop-th sample
        stft = torch.stft(batch, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = (self.filters.T @ power).clamp(min=1e-10).log10()
        mel = torch.maximum(mel, mel.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (mel + 4.0) / 4.0, torch.tensor(lengths)


class XYTokenizerModel(nn.Module):
    """The network, with the official module names."""

    def __init__(self, params: dict):
        super().__init__()
        self.params = params
        self.semantic_encoder = AudioEncoder(**params["semantic_encoder_kwargs"])
        self.semantic_encoder_adapter = Adapter(**params["semantic_encoder_adapter_kwargs"])
        self.acoustic_encoder = AudioEncoder(**params["acoustic_encoder_kwargs"])
        self.pre_rvq_adapter = Adapter(**params["pre_rvq_adapter_kwargs"])
        self.downsample = ResidualDownConv(**params["downsample_kwargs"])
        self.quantizer = ResidualVQ(**params["quantizer_kwargs"])
        self.post_rvq_adapter = Adapter(**params["post_rvq_adapter_kwargs"])
        self.upsample = UpConv(**params["upsample_kwargs"])
        self.acoustic_decoder = AudioDecoder(**params["acoustic_decoder_kwargs"])
        self.enhanced_vocos = Vocos(**params["vocos_kwargs"])

    def encode_features(self, mel, mel_lengths):
        """Stage outputs of the encode path, for one batch of 30 s windows."""
        out = {}
        sem, lengths = self.semantic_encoder(mel, mel_lengths)
        out["semantic_encoder"] = sem
        sem, _ = self.semantic_encoder_adapter(sem, lengths)
        out["semantic_encoder_adapter"] = sem
        aco, _ = self.acoustic_encoder(mel, mel_lengths)
        out["acoustic_encoder"] = aco
        x, _ = self.pre_rvq_adapter(torch.cat([sem, aco], dim=1), lengths)
        out["pre_rvq_adapter"] = x
        x, code_lengths = self.downsample(x, lengths)
        out["downsample"] = x
        out["codes"] = self.quantizer.encode(x, code_lengths)
        out["code_lengths"] = code_lengths
        return out

    def decode_codes(self, codes: torch.Tensor, lengths: torch.Tensor | None = None, stages: dict | None = None):
        """codes [Q, B, T] -> waveforms [B, T * decoder_upsample_rate] (rows past a shorter
        item's length are not meaningful; ``decode_batch`` trims them)."""
        x = self.quantizer.decode(codes)
        if stages is not None:
            stages["zq"] = x
        x, _ = self.post_rvq_adapter(x, lengths)
        if stages is not None:
            stages["post_rvq"] = x
        x = self.upsample(x)
        if stages is not None:
            stages["upsample"] = x
        up_lengths = lengths * self.upsample.up_conv.stride[0] if lengths is not None else None
        x = self.acoustic_decoder(x, up_lengths)
        if stages is not None:
            stages["acoustic_decoder"] = x
        valid = length_mask(up_lengths * self.acoustic_decoder.stride, x.shape[-1]) if lengths is not None else None
        h = self.enhanced_vocos.backbone(x, valid)
        if stages is not None:
            stages["vocos_backbone"] = h
        return h



def official_params(variant: str = "32k") -> dict:
    """``generator_params`` of the released configs. The three variants share the network
    and differ in the vocoder head and output rate (component facts §1)."""
    def encoder(layers_key, heads_key, ffn_key, layers):
        return {"num_mel_bins": 80, "sampling_rate": 16000, "hop_length": 160, "stride_size": 2, "kernel_size": 3,
                "d_model": 768, "scale_embedding": False, "max_audio_seconds": 30, layers_key: layers,
                heads_key: 12, ffn_key: 3072, "activation_function": "gelu"}

    def adapter(cin, cout, max_pos):
        return {"input_dim": cin, "output_dim": cout, "d_model": 768, "max_source_positions": max_pos,
                "encoder_layers": 4, "encoder_attention_heads": 12, "encoder_ffn_dim": 3072}

    heads = {"16k": (16000, 1280, 640, 160), "24k": (24000, 1920, 960, 240), "32k": (32000, 2560, 1280, 320)}
    if variant not in heads:
        raise CodecError(f"unknown XY-Tokenizer variant {variant!r}; known: {sorted(heads)}")
    out_rate, up_rate, n_fft, hop = heads[variant]
    return {
        "input_sample_rate": 16000, "output_sample_rate": out_rate,
        "encoder_downsample_rate": 1280, "decoder_upsample_rate": up_rate,
        "feature_extractor_kwargs": {"chunk_length": 30, "feature_size": 80, "hop_length": 160, "n_fft": 400,
                                     "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
                                     "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": 16000},
        "semantic_encoder_kwargs": encoder("encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", 12),
        "semantic_encoder_adapter_kwargs": adapter(768, 768, 1500),
        "acoustic_encoder_kwargs": encoder("encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", 12),
        "pre_rvq_adapter_kwargs": adapter(1536, 768, 1500),
        "downsample_kwargs": {"d_model": 768, "avg_pooler": 4},
        "quantizer_kwargs": {"input_dim": 3072, "rvq_dim": 512, "output_dim": 3072, "num_quantizers": 8,
                             "codebook_size": 1024, "codebook_dim": 512, "quantizer_dropout": 0.0, "commitment": 1},
        "post_rvq_adapter_kwargs": adapter(3072, 3072, 375),
        "upsample_kwargs": {"d_model": 768, "stride": 4},
        "acoustic_decoder_kwargs": encoder("decoder_layers", "decoder_attention_heads", "decoder_ffn_dim", 12),
        "vocos_kwargs": {"input_channels": 80, "dim": 512, "intermediate_dim": 4096, "num_layers": 30,
                         "n_fft": n_fft, "hop_size": hop, "padding": "same"},
    }


OFFICIAL_CKPT = "xy_tokenizer.ckpt"
OFFICIAL_YAML = "xy_tokenizer_config.yaml"
WEIGHTS = "model.safetensors"
PUBLISHED = ("VITA-QinYu-Models (the VITA-QinYu release bundle) holds xy_tokenizer.ckpt and xy_tokenizer_config.yaml "
             "(32 kHz); the same network is published as OpenMOSS-Team/MOSS_TTSD_tokenizer")


@register_codec("xy_tokenizer")
class XYTokenizer(Codec):
    """XY-Tokenizer behind the codec interface.

    Load the official ``xy_tokenizer.ckpt`` (+ its YAML beside it) with
    :meth:`from_official`, or a converted qinyu folder with :func:`load_codec`. Long
    audio is handled as the reference does: encode in 30 s windows every 20 s, decode in
    375-code windows every 250 codes, no cross-fade."""

    window_batch = 4  # 30 s windows per forward when encoding long audio

    def __init__(self, params: dict, model: XYTokenizerModel | None = None, device="cpu",
                 dtype: torch.dtype = torch.float32):
        self.params = params
        self.model = (model or XYTokenizerModel(params)).eval().to(device=device, dtype=dtype)
        self.front_end = MelFrontEnd(**params["feature_extractor_kwargs"])
        self.input_sample_rate = int(params["input_sample_rate"])
        self.output_sample_rate = int(params["output_sample_rate"])
        self.encoder_rate = int(params["encoder_downsample_rate"])
        self.decoder_rate = int(params["decoder_upsample_rate"])
        self.frame_rate = self.input_sample_rate / self.encoder_rate
        if self.output_sample_rate / self.decoder_rate != self.frame_rate:
            raise CodecError("XY-Tokenizer config: output_sample_rate / decoder_upsample_rate must equal "
                             "input_sample_rate / encoder_downsample_rate")

    @property
    def device(self):
        return self.model.quantizer.output_proj.bias.device

    @property
    def dtype(self):
        return self.model.quantizer.output_proj.bias.dtype

    def to(self, device=None, dtype=None) -> "XYTokenizer":
        self.model.to(device=device, dtype=dtype)
        if dtype is not None:  # codebooks and the ISTFT window stay fp32, like the search and the ISTFT
            for vq in self.model.quantizer.quantizers:
                vq.codebook.data = vq.codebook.data.float()
            istft = self.model.enhanced_vocos.head.istft
            istft.window.data = istft.window.data.float()
        return self

    # -- encode ------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav, sample_rate: int) -> np.ndarray:
        wav = check_waveform(wav, sample_rate)
        wav = torch.from_numpy(resample(wav, sample_rate, self.input_sample_rate))
        total = len(wav) // self.encoder_rate
        keep = ENCODE_STRIDE_SAMPLES // self.encoder_rate
        starts = list(range(0, max(len(wav), 1), ENCODE_STRIDE_SAMPLES))
        codes = []
        for b in range(0, len(starts), self.window_batch):  # 30 s windows, a few per forward
            windows = [wav[s:s + WINDOW_SAMPLES] for s in starts[b:b + self.window_batch]]
            mel, mel_lengths = self.front_end(windows)
            out = self.model.encode_features(mel.to(self.device, self.dtype), mel_lengths.to(self.device))
            codes += [out["codes"][:, i, :int(n)][:, :keep] for i, n in enumerate(out["code_lengths"])]
        return torch.cat(codes, dim=1)[:, :total].cpu().numpy().astype(np.int64)

    # -- decode ------------------------------------------------------------------------
    @torch.no_grad()
    def decode_batch(self, batch: list) -> list[np.ndarray]:
        """Decode several code sequences (each (8, T), T <= 375) in one forward."""
        codes = [torch.from_numpy(self.check_codes(c)) for c in batch]
        lengths = torch.tensor([c.shape[1] for c in codes])
        if int(lengths.max()) > DECODE_WINDOW_CODES:
            raise CodecError(f"decode_batch takes at most {DECODE_WINDOW_CODES} codes per item; use decode()")
        padded = torch.zeros(len(codes), 8, int(lengths.max()), dtype=torch.long)
        for i, c in enumerate(codes):
            padded[i, :, :c.shape[1]] = c
        hidden = self.model.decode_codes(padded.permute(1, 0, 2).to(self.device), lengths.to(self.device))
        out = []
        for i, n in enumerate(lengths.tolist()):
            frames = n * self.model.acoustic_decoder.stride * self.model.upsample.up_conv.stride[0]
            if n == 0:
                out.append(np.zeros(0, dtype=np.float32))
                continue
            wav = self.model.enhanced_vocos.head(hidden[i:i + 1, :frames])
            out.append(wav[0].float().cpu().numpy())
        return out

    def decode(self, codes) -> np.ndarray:
        codes = self.check_codes(codes)
        total = codes.shape[1]
        if total == 0:
            return np.zeros(0, dtype=np.float32)
        starts = list(range(0, total, DECODE_KEEP_CODES))
        pieces = self.decode_batch([codes[:, s:s + DECODE_WINDOW_CODES] for s in starts])
        keep = DECODE_KEEP_CODES * self.decoder_rate
        out = [p[:keep] for p in pieces[:-1]] + [pieces[-1]]
        return np.concatenate(out)[:total * self.decoder_rate]

    def stream_decoder(self, **options):
        from .streaming import ChunkedStreamDecoder

        return ChunkedStreamDecoder(self, **options)

    # -- loading and saving ------------------------------------------------------------
    @classmethod
    def from_official(cls, ckpt, config_yaml=None, device="cpu", dtype=torch.float32) -> "XYTokenizer":
        """Load the official ``xy_tokenizer.ckpt`` (a torch pickle: a bare state dict or
        one under ``generator``) with its YAML (``generator_params``), by default the
        ``xy_tokenizer_config.yaml`` beside it."""
        ckpt = Path(ckpt)
        if not ckpt.is_file():
            raise CodecError(f"XY-Tokenizer weights not found: {ckpt}. {PUBLISHED}")
        config_yaml = Path(config_yaml) if config_yaml else ckpt.with_name(OFFICIAL_YAML)
        if not config_yaml.is_file():
            raise CodecError(f"XY-Tokenizer config not found: {config_yaml} (it ships beside {ckpt.name}). {PUBLISHED}")
        import yaml

        try:
            params = yaml.safe_load(config_yaml.read_text())["generator_params"]
        except (yaml.YAMLError, KeyError, TypeError) as e:
            raise CodecError(f"{config_yaml}: no readable generator_params: {e}") from None
        try:
            state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for corrupt pickles
            raise CodecError(f"cannot read {ckpt}: {e}") from None
        if isinstance(state, dict) and "generator" in state:
            state = state["generator"]
        return cls._with_state(params, state, str(ckpt), device, dtype)

    @classmethod
    def is_official_folder(cls, path: Path) -> bool:
        return (Path(path) / OFFICIAL_CKPT).is_file()

    @classmethod
    def load_official_folder(cls, path: Path) -> "XYTokenizer":
        return cls.from_official(Path(path) / OFFICIAL_CKPT)

    @classmethod
    def _with_state(cls, params, state, source, device, dtype):
        with torch.device("meta"):
            model = XYTokenizerModel(params)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CodecError(f"{source}: weights do not match the config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        for k, v in state.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise CodecError(f"{source}: weight {k} has shape {tuple(v.shape)}, config needs "
                                 f"{tuple(expected[k].shape)}")
        model.load_state_dict(state, assign=True)
        return cls(params, model).to(device=device, dtype=dtype if dtype != torch.float32 else None)

    def save(self, directory) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (WEIGHTS + ".tmp")
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        tmp.replace(directory / WEIGHTS)
        meta = {"type": "xy_tokenizer", "params": self.params, "frame_rate": self.frame_rate,
                "sample_rate": self.output_sample_rate}
        tmp = directory / (CODEC_CONFIG + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        tmp.replace(directory / CODEC_CONFIG)
        return directory

    @classmethod
    def load(cls, directory, device="cpu", dtype=torch.float32) -> "XYTokenizer":
        from safetensors.torch import load_file

        directory = Path(directory)
        meta = json.loads((directory / CODEC_CONFIG).read_text())
        weights = directory / WEIGHTS
        if not weights.is_file():
            official = directory / OFFICIAL_CKPT
            if official.is_file():
                return cls.from_official(official, device=device, dtype=dtype)
            raise CodecError(f"XY-Tokenizer weights not found: {weights}. {PUBLISHED}")
        return cls._with_state(meta["params"], load_file(str(weights)), str(weights), device, dtype)
