"""Kaldi-style front ends (kaldi-native-fbank), LFR stacking and CMVN.

* SenseVoice: 80-bin log-mel fbank of the waveform scaled by 32768, **hamming**
  window, energy floor 0, dither 0 (the reference's default dither of 1.0 makes its
  features random; qinyu is deterministic), then LFR (7 frames every 6) and CMVN from
  ``am.mvn``.
* CAM++: 80-bin fbank of the unscaled waveform, **povey** window, then the mean over
  time subtracted.

Everything else is Kaldi's defaults: 25 ms frames every 10 ms, pre-emphasis 0.97, DC
removal, 512-point FFT, 20 Hz to Nyquist, snip_edges.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .io import check_waveform


class FrontEndError(ValueError):
    pass


def kaldi_fbank(wav: np.ndarray, sample_rate: int = 16000, num_mel_bins: int = 80, window: str = "povey",
                energy_floor: float = 1.0, scale: float = 1.0, dither: float = 0.0) -> np.ndarray:
    """[T, num_mel_bins] log-mel fbank; T = 1 + (n - 400) // 160 at 16 kHz (0 if shorter)."""
    import kaldi_native_fbank as knf

    wav = check_waveform(wav, sample_rate)
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sample_rate
    opts.frame_opts.dither = dither
    opts.frame_opts.window_type = window
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = num_mel_bins
    opts.energy_floor = energy_floor
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(sample_rate, (wav.astype(np.float32) * scale).tolist())
    fbank.input_finished()
    n = fbank.num_frames_ready
    if n == 0:
        return np.zeros((0, num_mel_bins), dtype=np.float32)
    return np.stack([fbank.get_frame(i) for i in range(n)]).astype(np.float32)


def apply_lfr(feats: np.ndarray, m: int = 7, n: int = 6) -> np.ndarray:
    """Low frame rate: prepend (m-1)//2 copies of frame 0, stack m frames every n,
    pad the end with the last frame. [T, D] -> [ceil(T/n), m*D]."""
    t, d = feats.shape
    if t == 0:
        return np.zeros((0, m * d), dtype=feats.dtype)
    out_len = -(-t // n)
    left = (m - 1) // 2
    padded = np.concatenate([np.repeat(feats[:1], left, 0), feats])
    need = (out_len - 1) * n + m
    if len(padded) < need:
        padded = np.concatenate([padded, np.repeat(feats[-1:], need - len(padded), 0)])
    idx = np.arange(out_len)[:, None] * n + np.arange(m)[None, :]
    return padded[idx].reshape(out_len, m * d)


def load_cmvn(path) -> np.ndarray:
    """Parse a Kaldi nnet ``am.mvn``: [2, D] = (AddShift, Rescale)."""
    path = Path(path)
    if not path.is_file():
        raise FrontEndError(f"CMVN file not found: {path}")
    text = path.read_text()
    rows = []
    for tag in ("<AddShift>", "<Rescale>"):
        m = re.search(re.escape(tag) + r".*?<LearnRateCoef>\s*\S+\s*\[([^\]]*)\]", text, re.S)
        if not m:
            raise FrontEndError(f"{path}: no {tag} block with a <LearnRateCoef> 0 [ ... ] vector")
        rows.append(np.array(m.group(1).split(), dtype=np.float32))
    if rows[0].shape != rows[1].shape:
        raise FrontEndError(f"{path}: AddShift has {len(rows[0])} values but Rescale has {len(rows[1])}")
    return np.stack(rows)


def write_cmvn(path, mean: np.ndarray, std: np.ndarray) -> Path:
    """Write an ``am.mvn`` that :func:`load_cmvn` reads: AddShift = -mean, Rescale = 1/std
    (what SenseVoice ships for its features; qinyu-nano computes its own from its corpus)."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean.shape != std.shape or mean.ndim != 1:
        raise FrontEndError(f"mean and std must be vectors of one size, got {mean.shape} and {std.shape}")
    if not np.all(std > 0):
        raise FrontEndError("every std must be > 0")
    dim = len(mean)

    def vector(values):
        return " ".join(f"{v:.8g}" for v in values)

    path = Path(path)
    path.write_text(f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ "
                    f"{vector(-mean)} ]\n<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {vector(1.0 / std)} ]\n"
                    f"</Nnet>\n")
    return path


class SenseVoiceFrontEnd:
    """waveform (16 kHz) -> [ceil(T_fbank / 6), 560] encoder features."""

    def __init__(self, cmvn: np.ndarray | None = None, lfr_m: int = 7, lfr_n: int = 6, num_mel_bins: int = 80):
        self.cmvn = cmvn
        self.lfr_m, self.lfr_n, self.num_mel_bins = lfr_m, lfr_n, num_mel_bins
        if cmvn is not None and cmvn.shape != (2, lfr_m * num_mel_bins):
            raise FrontEndError(f"CMVN has shape {cmvn.shape}, expected (2, {lfr_m * num_mel_bins})")

    @classmethod
    def from_mvn(cls, path, **kwargs) -> "SenseVoiceFrontEnd":
        return cls(load_cmvn(path), **kwargs)

    def fbank(self, wav: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
        if sample_rate != 16000:
            raise FrontEndError(f"SenseVoice features need 16 kHz audio, got {sample_rate} Hz (resample first)")
        return kaldi_fbank(wav, 16000, self.num_mel_bins, window="hamming", energy_floor=0.0, scale=32768.0)

    def __call__(self, wav: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
        feats = apply_lfr(self.fbank(wav, sample_rate), self.lfr_m, self.lfr_n)
        if self.cmvn is not None:
            feats = (feats + self.cmvn[0]) * self.cmvn[1]
        return feats.astype(np.float32)


def campplus_fbank(wav: np.ndarray, sample_rate: int = 16000, num_mel_bins: int = 80) -> np.ndarray:
    """CAM++ features: povey-window fbank of the unscaled waveform, mean over time removed."""
    feats = kaldi_fbank(wav, sample_rate, num_mel_bins, window="povey", energy_floor=1.0, scale=1.0)
    return feats - feats.mean(axis=0, keepdims=True) if len(feats) else feats
