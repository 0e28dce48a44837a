"""Audio I/O: read common formats with soundfile, downmix to mono, resample with soxr."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class AudioError(ValueError):
    pass


def check_waveform(wav, sample_rate, name: str = "audio") -> np.ndarray:
    """Validate a waveform and return it as mono float32 in [-1, 1]-ish.

    Accepts (n,) or (n, channels); rejects empty, non-finite or non-numeric input and a
    bad sample rate, naming the problem."""
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{name}: sample rate must be a positive integer, got {sample_rate!r}")
    arr = np.asarray(wav)
    if arr.dtype.kind not in "fiu":
        raise AudioError(f"{name}: samples must be numbers, got dtype {arr.dtype}")
    if arr.dtype.kind in "iu":
        scale = float(np.iinfo(arr.dtype).max) + 1.0
        arr = arr.astype(np.float32) / scale
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = arr.mean(axis=1)
    elif arr.ndim != 1:
        raise AudioError(f"{name}: expected shape (samples,) or (samples, channels), got {arr.shape}")
    if arr.size == 0:
        raise AudioError(f"{name}: no samples")
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise AudioError(f"{name}: non-finite sample (NaN or inf) at index {bad}")
    return arr


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return wav.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(wav.astype(np.float32, copy=False), from_rate, to_rate, quality="HQ").astype(np.float32)


def load_audio(path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a wav/flac/ogg file as mono float32, resampled to ``sample_rate`` if given."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioError(f"cannot read audio file {path}: {e}") from None
    wav = check_waveform(wav, sr, name=str(path))
    if sample_rate is not None and sr != sample_rate:
        wav, sr = resample(wav, sr, sample_rate), sample_rate
    return wav, sr


def save_audio(path, wav: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    sf.write(str(path), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16")
