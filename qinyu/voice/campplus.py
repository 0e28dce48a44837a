"""CAM++ speaker encoder (3D-Speaker ``CAMPPlus``) and VITA-QinYu's speaker embedding.

The network maps CAM++ features (80-bin povey fbank with the mean over time removed,
``qinyu.audio.fbank.campplus_fbank``) to one 192-d vector per utterance:

    fbank [B, T, 80]
      -> head (FCM): a small 2-D ResNet over (frequency, time); frequency 80 -> 10,
         flattened to [B, 32 * 10, T]
      -> xvector.tdnn: Conv1d k5 stride 2, so frames go from 100 Hz to 50 Hz
      -> block1 / transit1 / block2 / transit2 / block3 / transit3: densely connected
         TDNN layers with context-aware masking (CAM), each transit halving channels
      -> out_nonlinear, stats (mean || unbiased std over time), dense -> [B, 192]

Module and parameter names follow the reference (``head.layer1.0.conv1.weight``,
``xvector.block2.tdnnd7.cam_layer.linear_local.weight``, ...), so the official
``campplus_cn_common.bin`` and the golden parity weights load with a strict
``load_state_dict``.

``SpeakerEncoder`` wraps the network with VITA-QinYu's ``extract_speaker_embedding``
procedure: 16 kHz mono, at most 90 s, 10 s chunks (the whole clip tiled cyclically to fill
the last one), features per chunk, one batch through CAM++, the mean over chunks. The
result is the raw vector, not L2-normalised, because that is what the LM's speaker
projector was trained on.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qinyu.audio.fbank import campplus_fbank
from qinyu.audio.io import check_waveform, resample

SAMPLE_RATE = 16000
CHUNK_SECONDS = 10
MAX_SECONDS = 90
# One Kaldi analysis frame (25 ms at 16 kHz). A shorter clip has no fbank frame of its
# own, so tiling it up to 10 s would only repeat a fragment that says nothing about the voice.
MIN_SAMPLES = 400

OFFICIAL_WEIGHTS = "campplus_cn_common.bin"
PUBLISHED = (f"The official CAM++ weights are the file {OFFICIAL_WEIGHTS} of the modelscope model "
             "iic/speech_campplus_sv_zh-cn_16k-common.")
CONFIG_FILE = "speaker_encoder.json"
WEIGHTS_FILE = "speaker_encoder.safetensors"


class SpeakerEncoderError(ValueError):
    pass


@dataclass(frozen=True)
class CAMPPlusConfig:
    """Defaults are the official model (``CAMPPlus(feat_dim=80, embedding_size=192)``)."""

    feat_dim: int = 80
    embedding_size: int = 192
    growth_rate: int = 32
    bn_size: int = 4
    init_channels: int = 128
    block_layers: tuple[int, int, int] = (12, 24, 16)
    head_channels: int = 32

    @classmethod
    def from_dict(cls, d: dict) -> "CAMPPlusConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpeakerEncoderError(f"unknown CAM++ config keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        if "block_layers" in d:
            d["block_layers"] = tuple(d["block_layers"])
        return cls(**d)


# The tiny configuration of the golden parity data (shared/parity/campplus).
GOLDEN_TINY_CONFIG = CAMPPlusConfig(growth_rate=8, bn_size=2, init_channels=32)


def batchnorm_relu(channels: int) -> nn.Sequential:
    """The reference's ``get_nonlinear('batchnorm-relu', C)``; the names give the
    ``nonlinear.batchnorm.*`` keys."""
    return nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(channels), relu=nn.ReLU()))


# --------------------------------------------------------------------------------------
# FCM head: a 2-D ResNet over (frequency, time)
# --------------------------------------------------------------------------------------
class BasicResBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, freq_stride: int):
        super().__init__()
        # Striding only along frequency keeps the 100 Hz frame rate for the TDNN part.
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=(freq_stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        if freq_stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=(freq_stride, 1), bias=False),
                nn.BatchNorm2d(channels),
            )
        else:
            self.shortcut = nn.Sequential()  # identity, no parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class FCM(nn.Module):
    """[B, F, T] -> [B, C * F / 8, T]."""

    def __init__(self, feat_dim: int = 80, channels: int = 32, num_blocks: tuple[int, int] = (2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(*[BasicResBlock(channels, channels, 2 if i == 0 else 1)
                                      for i in range(num_blocks[0])])
        self.layer2 = nn.Sequential(*[BasicResBlock(channels, channels, 2 if i == 0 else 1)
                                      for i in range(num_blocks[1])])
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        # three frequency strides of 2 (layer1, layer2, conv2)
        self.out_channels = channels * math.ceil(math.ceil(math.ceil(feat_dim / 2) / 2) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = self.layer1(out)
        out = self.layer2(out)
        out = F.relu(self.bn2(self.conv2(out)))
        batch, channels, freq, time = out.shape
        return out.reshape(batch, channels * freq, time)  # channel-major, as the reference


# --------------------------------------------------------------------------------------
# xvector: TDNN + CAM dense blocks
# --------------------------------------------------------------------------------------
class TDNNLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride,
                                padding=(kernel_size - 1) // 2, bias=False)
        self.nonlinear = batchnorm_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Context-aware masking: a dilated local conv, gated per channel and frame by a
    sigmoid of the utterance mean plus the mean of the 100-frame segment around it."""

    segment_frames = 100

    def __init__(self, bn_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.linear_local = nn.Conv1d(bn_channels, out_channels, kernel_size, dilation=dilation,
                                      padding=(kernel_size - 1) // 2 * dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // 2, 1)
        self.relu = nn.ReLU()
        self.linear2 = nn.Conv1d(bn_channels // 2, out_channels, 1)

    def segment_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over consecutive 100-frame segments, broadcast back to every frame. The
        last segment may be shorter and is averaged over the frames it has."""
        seg = F.avg_pool1d(x, kernel_size=self.segment_frames, stride=self.segment_frames, ceil_mode=True)
        return seg.repeat_interleave(self.segment_frames, dim=-1)[..., : x.shape[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.linear_local(x)
        context = x.mean(dim=-1, keepdim=True) + self.segment_mean(x)
        mask = torch.sigmoid(self.linear2(self.relu(self.linear1(context))))
        return local * mask


class CAMDenseTDNNLayer(nn.Module):
    """BN-ReLU -> 1x1 bottleneck -> BN-ReLU -> CAM; returns only the new channels."""

    def __init__(self, in_channels: int, growth_rate: int, bn_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.nonlinear1 = batchnorm_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, bn_channels, 1, bias=False)
        self.nonlinear2 = batchnorm_relu(bn_channels)
        self.cam_layer = CAMLayer(bn_channels, growth_rate, kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.Module):
    """Dense connectivity: each layer sees all earlier outputs, and its own growth_rate
    channels are appended, so C_out = C_in + num_layers * growth_rate."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_channels: int,
                 kernel_size: int, dilation: int):
        super().__init__()
        for i in range(num_layers):
            layer = CAMDenseTDNNLayer(in_channels + i * growth_rate, growth_rate, bn_channels, kernel_size, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)  # 1-based, as the reference keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.nonlinear = batchnorm_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    """[B, C, T] -> [B, 2C]: mean || unbiased standard deviation over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class DenseLayer(nn.Module):
    """1x1 conv to the embedding, then BatchNorm without affine parameters
    (the reference's ``config_str='batchnorm_'``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.linear = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.nonlinear = nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(out_channels, affine=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    """CAM++: fbank [B, T, feat_dim] -> raw speaker embedding [B, embedding_size]."""

    dilations = (1, 2, 2)
    kernel_size = 3

    def __init__(self, feat_dim: int = 80, embedding_size: int = 192, growth_rate: int = 32, bn_size: int = 4,
                 init_channels: int = 128, block_layers: tuple[int, int, int] = (12, 24, 16),
                 head_channels: int = 32):
        super().__init__()
        if len(block_layers) != 3 or min(block_layers) < 1:
            raise SpeakerEncoderError(f"block_layers must be 3 positive layer counts, got {block_layers!r}")
        self.config = CAMPPlusConfig(feat_dim, embedding_size, growth_rate, bn_size, init_channels,
                                     tuple(block_layers), head_channels)
        self.head = FCM(feat_dim=feat_dim, channels=head_channels)

        self.xvector = nn.Sequential()
        self.xvector.add_module("tdnn", TDNNLayer(self.head.out_channels, init_channels, 5, stride=2))
        channels = init_channels
        for i, (num_layers, dilation) in enumerate(zip(block_layers, self.dilations, strict=True), start=1):
            block = CAMDenseTDNNBlock(num_layers, channels, growth_rate, bn_size * growth_rate,
                                      self.kernel_size, dilation)
            self.xvector.add_module(f"block{i}", block)
            channels += num_layers * growth_rate
            self.xvector.add_module(f"transit{i}", TransitLayer(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", batchnorm_relu(channels))
        self.xvector.add_module("stats", StatsPool())
        self.xvector.add_module("dense", DenseLayer(channels * 2, embedding_size))

        # The reference's init (Conv2d layers keep torch's default).
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @classmethod
    def from_config(cls, config: CAMPPlusConfig) -> "CAMPPlus":
        return cls(**asdict(config))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        if fbank.ndim != 3 or fbank.shape[-1] != self.config.feat_dim:
            raise SpeakerEncoderError(f"CAM++ expects fbank features [batch, frames, {self.config.feat_dim}], "
                                      f"got shape {tuple(fbank.shape)}")
        # The stride-2 TDNN halves the frames and the std over time needs two of them.
        if fbank.shape[1] < 3:
            raise SpeakerEncoderError(f"CAM++ needs at least 3 feature frames (45 ms of audio), got {fbank.shape[1]}")
        x = self.head(fbank.transpose(1, 2))  # [B, F, T] -> [B, C, T]
        return self.xvector(x)


def count_bn_running_stats(model: nn.Module) -> int:
    return sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))


# --------------------------------------------------------------------------------------
# VITA-QinYu's speaker embedding
# --------------------------------------------------------------------------------------
def prepare_waveform(wav, sample_rate: int, name: str = "audio") -> np.ndarray:
    """Validate, downmix to mono, resample to 16 kHz and cut to 90 s."""
    arr = np.asarray(wav)
    if arr.ndim == 2 and arr.shape[0] < arr.shape[1]:
        raise SpeakerEncoderError(f"{name}: got shape {arr.shape}; multi-channel audio must be "
                                  "(samples, channels), e.g. transpose a (channels, samples) array")
    mono = check_waveform(arr, sample_rate, name)
    mono = resample(mono, int(sample_rate), SAMPLE_RATE)
    if len(mono) < MIN_SAMPLES:
        raise SpeakerEncoderError(f"{name}: {len(mono) / SAMPLE_RATE * 1000:.1f} ms of audio is shorter than one "
                                  f"25 ms analysis frame; a speaker embedding needs at least {MIN_SAMPLES} "
                                  f"samples at {SAMPLE_RATE} Hz")
    return mono[: MAX_SECONDS * SAMPLE_RATE]


def vita_chunks(wav16k: np.ndarray) -> np.ndarray:
    """[n, 160000]: n = ceil(len / 10 s); the whole clip is repeated cyclically up to
    n * 10 s and cut into n chunks (VITA's ``chunk_wav``)."""
    chunk = CHUNK_SECONDS * SAMPLE_RATE
    n = math.ceil(len(wav16k) / chunk)
    repeats = math.ceil(n * chunk / len(wav16k))
    return np.tile(wav16k, repeats)[: n * chunk].reshape(n, chunk)


class SpeakerEncoder:
    """CAM++ plus VITA-QinYu's embedding procedure; ``embed(wav, sr)`` -> float32 [192]."""

    def __init__(self, model: CAMPPlus):
        self.model = model.eval()

    @property
    def config(self) -> CAMPPlusConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "SpeakerEncoder":
        self.model.to(device)
        return self

    # -- embedding -------------------------------------------------------------------
    def chunk_features(self, wav, sample_rate: int) -> np.ndarray:
        """[n_chunks, 998, 80]: fbank + mean removal for each 10 s chunk."""
        chunks = vita_chunks(prepare_waveform(wav, sample_rate))
        return np.stack([campplus_fbank(c, SAMPLE_RATE, self.config.feat_dim) for c in chunks])

    @torch.inference_mode()
    def embed_features(self, features, dtype: str = "fp32") -> np.ndarray:
        """[B, T, 80] features -> [B, 192] embeddings, as one batch. ``dtype`` "bf16" runs
        the network under bf16 autocast (2.6x faster on CPUs with AVX-512 BF16; for bulk
        embedding of training inputs, not for judging)."""
        if dtype not in ("fp32", "bf16"):
            raise SpeakerEncoderError(f"dtype must be fp32 or bf16, got {dtype!r}")
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            return self.model(x).float().cpu().numpy()

    def embed(self, wav, sample_rate: int, dtype: str = "fp32") -> np.ndarray:
        """VITA-QinYu's ``extract_speaker_embedding``: the mean of the chunk embeddings,
        not L2-normalised."""
        return self.embed_features(self.chunk_features(wav, sample_rate), dtype=dtype).mean(axis=0)

    # -- loading and saving ----------------------------------------------------------
    @classmethod
    def from_state_dict(cls, state: dict, config: CAMPPlusConfig = CAMPPlusConfig(), source: str = "state dict",
                        device="cpu") -> "SpeakerEncoder":
        with torch.device("meta"):
            model = CAMPPlus.from_config(config)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise SpeakerEncoderError(f"{source}: weights do not match CAM++ {config}: "
                                      f"{len(missing)} missing (e.g. {missing[:3]}), "
                                      f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        wrong = [f"{k} {tuple(v.shape)} (config: {tuple(expected[k].shape)})"
                 for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
        if wrong:
            raise SpeakerEncoderError(f"{source}: weights do not match CAM++ {config}: {len(wrong)} tensors have "
                                      f"other shapes, e.g. {wrong[:2]}")
        # float32 throughout: a half-precision checkpoint would otherwise meet float32 features
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        return cls(model).to(device)

    @classmethod
    def from_official(cls, path, config: CAMPPlusConfig = CAMPPlusConfig(), device="cpu") -> "SpeakerEncoder":
        """Load ``campplus_cn_common.bin`` (a torch-pickled state dict of the official
        ``CAMPPlus(feat_dim=80, embedding_size=192)``), or a folder holding it. ``config``
        is for checkpoints of the same format at other sizes."""
        path = Path(path)
        if path.is_dir():
            path = path / OFFICIAL_WEIGHTS
        if not path.is_file():
            raise SpeakerEncoderError(f"CAM++ weights not found: {path}. {PUBLISHED}")
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for corrupt or foreign pickles
            raise SpeakerEncoderError(f"cannot read CAM++ weights {path}: {e}") from None
        if not isinstance(state, dict):
            raise SpeakerEncoderError(f"{path}: expected a state dict, got {type(state).__name__}")
        return cls.from_state_dict(state, config, str(path), device)

    def save(self, directory) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        meta = {"type": "campplus", "sample_rate": SAMPLE_RATE, "config": asdict(self.config)}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory, device="cpu") -> "SpeakerEncoder":
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (config_path, weights_path):
            if not p.is_file():
                raise SpeakerEncoderError(f"speaker encoder folder {directory} has no {p.name} (expected "
                                          f"{CONFIG_FILE} and {WEIGHTS_FILE}, written by SpeakerEncoder.save)")
        try:
            meta = json.loads(config_path.read_text())
            config = CAMPPlusConfig.from_dict(meta["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SpeakerEncoderError(f"{config_path}: not a speaker encoder config: {e}") from None
        return cls.from_state_dict(load_file(str(weights_path)), config, str(weights_path), device)
