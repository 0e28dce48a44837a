"""SpecAugment for SenseVoice's LFR features: a random warp of the mel axis, frequency
masks and time masks, each utterance drawn on its own.

The features are [T, k*80]: k stacked frames of 80 log-mel bins (low frame rate, 7 x 80
for SenseVoice), so the mel operations act on every 80-bin block alike. The warp
stretches the mel axis (vocal-tract length: the main way espeak-ng voices differ); the
masks zero bands of bins and runs of frames (Park et al., 2019).

Used by the CTC pre-training of the nano encoder (``qinyu.train.encoder_ctc``) and, when
a recipe asks for it (``Recipe.audio_augment``), on the user speech the SLM stages feed
a frozen encoder, so the LM reads frames it has not seen before at every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

MEL_BINS = 80  # the LFR features stack 7 frames of 80 mel bins


class SpecAugmentError(ValueError):
    pass


def warp_mel(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Stretch (factor > 1 reads higher bins) the mel axis of [T, k*80] LFR features."""
    grid = (torch.arange(MEL_BINS, dtype=torch.float32) * factor).clamp(0, MEL_BINS - 1)
    lo = grid.floor().long()
    hi = (lo + 1).clamp(max=MEL_BINS - 1)
    w = grid - lo
    blocks = x.view(x.shape[0], -1, MEL_BINS)
    return (blocks[..., lo] * (1 - w) + blocks[..., hi] * w).reshape(x.shape)


@dataclass(frozen=True)
class SpecAugment:
    """``warp``: the mel axis is stretched by a factor drawn from [1 - warp, 1 + warp] (0:
    none); ``freq_masks`` bands of up to ``freq_width`` bins and ``time_masks`` runs of up to
    ``time_width`` frames are zeroed."""

    warp: float = 0.15
    freq_masks: int = 2
    freq_width: int = 10
    time_masks: int = 2
    time_width: int = 4

    def __post_init__(self):
        if not isinstance(self.warp, (int, float)) or not 0 <= self.warp < 1:
            raise SpecAugmentError(f"warp must be a number in [0, 1), got {self.warp!r}")
        for name in ("freq_masks", "freq_width", "time_masks", "time_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SpecAugmentError(f"{name} must be a non-negative integer, got {value!r}")
        if self.freq_width >= MEL_BINS:
            raise SpecAugmentError(f"freq_width must be below the {MEL_BINS} mel bins, got {self.freq_width}")

    @classmethod
    def from_dict(cls, values: dict) -> "SpecAugment":
        if not isinstance(values, dict):
            raise SpecAugmentError(f"SpecAugment settings are a mapping of {[f.name for f in fields(cls)]}, "
                                   f"got {values!r}")
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise SpecAugmentError(f"unknown SpecAugment setting(s) {unknown}; known: {[f.name for f in fields(cls)]}")
        return cls(**values)

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """One utterance's features [T, k*80] -> an augmented copy (``x`` is left alone)."""
        if x.ndim != 2 or x.shape[1] % MEL_BINS:
            raise SpecAugmentError(f"features must be [frames, k*{MEL_BINS}], got {tuple(x.shape)}")
        x = warp_mel(x, float(rng.uniform(1 - self.warp, 1 + self.warp))) if self.warp else x.clone()
        blocks = x.view(x.shape[0], -1, MEL_BINS)
        for _ in range(self.freq_masks):
            f0, w = int(rng.integers(0, MEL_BINS - self.freq_width)), int(rng.integers(0, self.freq_width + 1))
            blocks[..., f0:f0 + w] = 0
        for _ in range(self.time_masks):
            t0, w = int(rng.integers(0, max(1, x.shape[0] - self.time_width))), int(rng.integers(0, self.time_width + 1))
            x[t0:t0 + w] = 0
        return x
