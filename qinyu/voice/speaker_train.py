"""Train a CAM++ speaker encoder from scratch on labelled clips.

One readable loop: CAM++ features of every clip are computed once; each step takes a
batch of random clips, a random fixed-length crop of each (with its own mean removal,
as inference removes the mean of each chunk), and trains CAM++ plus an
additive-margin softmax head (AM-softmax: cosine logits, the target's cosine lowered
by ``margin``, all scaled by ``scale``) to name the speaker. The head is dropped at the
end; what is returned is an eval-mode ``SpeakerEncoder``.

Deterministic for a given seed (and thread count): the weights are initialised under
``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the caller's RNG state is
left alone) and the batches come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qinyu.audio.fbank import campplus_fbank

from .campplus import SAMPLE_RATE, CAMPPlus, CAMPPlusConfig, SpeakerEncoder, SpeakerEncoderError, prepare_waveform


class AdditiveMarginHead(nn.Module):
    """Cosine classifier over speakers; ``margin=0`` is a plain normalised softmax."""

    def __init__(self, embedding_size: int, num_speakers: int, margin: float = 0.2, scale: float = 30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_speakers, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (loss, cosine [B, num_speakers])."""
        cosine = F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1))
        target = F.one_hot(labels, cosine.shape[-1]).to(cosine.dtype)
        logits = self.scale * (cosine - self.margin * target)
        return F.cross_entropy(logits, labels), cosine


def random_crops(features: list[np.ndarray], clip_ids: np.ndarray, crop_frames: int,
                 rng: np.random.Generator) -> np.ndarray:
    """[B, crop_frames, D]: a random window of each chosen clip, its mean removed. A clip
    shorter than the window is repeated cyclically, like VITA fills its last chunk."""
    crops = []
    for i in clip_ids:
        feats = features[i]
        start = rng.integers(0, max(len(feats) - crop_frames, 0) + 1)
        crop = feats[(start + np.arange(crop_frames)) % len(feats)]
        crops.append(crop - crop.mean(axis=0, keepdims=True))
    return np.stack(crops).astype(np.float32)


def train_speaker_encoder(
    clips: Sequence[tuple[np.ndarray, int, Hashable]],
    config: CAMPPlusConfig | None = None,
    steps: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
    batch_size: int = 32,
    crop_frames: int = 200,
    margin: float = 0.2,
    scale: float = 30.0,
    weight_decay: float = 1e-4,
    dtype: str = "fp32",
    progress: Callable[[int, int, float, float], None] | None = None,
) -> SpeakerEncoder:
    """Train CAM++ from scratch on ``clips`` = [(waveform, sample_rate, speaker_label), ...].

    ``config`` defaults to the official size. ``crop_frames`` is the training window in
    10 ms fbank frames. ``progress(step, steps, loss, batch_accuracy)`` is called after
    every step. The learning rate decays along a cosine to zero by the last step.
    ``dtype`` "bf16" runs CAM++ under bf16 autocast (the margin head and its loss stay fp32;
    the weights stay fp32): on 2 CPU cores with AVX-512 BF16 a step of 32 x 200 frames of the
    nano configuration took 0.50 s against 1.11 s."""
    config = config or CAMPPlusConfig()
    if dtype not in ("fp32", "bf16"):
        raise SpeakerEncoderError(f"dtype must be fp32 or bf16, got {dtype!r}")
    if steps < 1:
        raise SpeakerEncoderError(f"steps must be >= 1, got {steps}")
    if batch_size < 2:
        raise SpeakerEncoderError(f"batch_size must be >= 2 (BatchNorm needs two samples), got {batch_size}")
    if crop_frames < 3:
        raise SpeakerEncoderError(f"crop_frames must be >= 3, got {crop_frames}")
    if not clips:
        raise SpeakerEncoderError("no training clips")

    speakers = sorted({label for _, _, label in clips}, key=str)
    if len(speakers) < 2:
        raise SpeakerEncoderError(f"need clips of at least 2 speakers to train a speaker encoder, got {speakers}")
    speaker_index = {label: i for i, label in enumerate(speakers)}
    features, labels = [], []
    for n, (wav, sample_rate, label) in enumerate(clips):
        wav16k = prepare_waveform(wav, sample_rate, name=f"training clip {n} (speaker {label!r})")
        features.append(campplus_fbank(wav16k, SAMPLE_RATE, config.feat_dim))
        labels.append(speaker_index[label])
    labels = np.asarray(labels)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CAMPPlus.from_config(config)
        head = AdditiveMarginHead(config.embedding_size, len(speakers), margin, scale)
    params = list(model.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    rng = np.random.default_rng(seed)

    model.train()
    head.train()
    for step in range(steps):
        clip_ids = rng.integers(0, len(features), batch_size)
        x = torch.from_numpy(random_crops(features, clip_ids, crop_frames, rng))
        y = torch.from_numpy(labels[clip_ids])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            embeddings = model(x)
        loss, cosine = head(embeddings.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None:
            accuracy = (cosine.argmax(dim=-1) == y).float().mean().item()
            progress(step + 1, steps, loss.item(), accuracy)

    return SpeakerEncoder(model)  # eval mode; the classifier head is dropped
