"""Pitch-contour metrics: F0 by Praat, contour MSE and DTW on normalised log-F0, note accuracy.

The paper (App. F, Table 9) compares "normalized pitch contours" of reconstructed and
original songs by MSE and DTW distance but publishes neither script nor choices, so
numbers from here are not comparable with Table 9; ``PITCH_METHOD`` states every choice
and goes into reports.
"""

from __future__ import annotations

import numpy as np

# Singing spans roughly 60 Hz (bass) to 1 kHz (soprano): wider than Praat's speech defaults
# (75-600 Hz). The floor also sets Praat's analysis window (3 periods of the floor = 60 ms).
PITCH_FLOOR_HZ = 50.0
PITCH_CEILING_HZ = 1100.0

PITCH_METHOD = (
    "F0: Praat autocorrelation pitch (parselmouth Sound.to_pitch_ac, default voicing and octave "
    f"parameters) with floor {PITCH_FLOOR_HZ:g} Hz and ceiling {PITCH_CEILING_HZ:g} Hz, time step = hop "
    "(10 ms by default), sampled on the grid t = (k + 0.5) x hop from the nearest Praat frame; Praat's "
    "unvoiced frames and frames outside its analysis range are 0 (unvoiced). Normalisation: voiced frames "
    "only, natural log of F0, then z-score (minus the mean, over the standard deviation; a constant "
    "contour becomes zeros), so a constant transposition or a different singer's register does not count. "
    "MSE: both contours cut to the shorter length, frames voiced in both kept, each contour normalised "
    "over those common frames, mean squared difference. DTW: each contour normalised over its own voiced "
    "frames, cost |a - b|, steps (1,0), (0,1), (1,1) with weight 1, from the first to the last frame of "
    "both, total cost of the cheapest path divided by the number of cells on it (ties prefer the "
    "diagonal). Note accuracy: raw F0 of frames voiced in both (cut to the shorter), fraction whose "
    "difference is at most the tolerance in semitones (12 log2 of the ratio; no octave folding)."
)


class PitchError(ValueError):
    """A contour metric has nothing to compare (no voiced frame, or none in common)."""


def f0_contour(wav: np.ndarray, sr: int, hop_s: float = 0.01) -> np.ndarray:
    """F0 in Hz per hop (0 = unvoiced); frame k is centred at (k + 0.5) * hop_s."""
    import parselmouth

    from qinyu.audio.io import check_waveform

    wav = check_waveform(wav, sr, "pitch audio").astype(np.float64)
    num_frames = int(len(wav) / sr / hop_s)
    f0 = np.zeros(num_frames)
    if num_frames == 0 or not np.abs(wav).max() > 0:
        return f0
    pitch = parselmouth.Sound(wav, sampling_frequency=sr).to_pitch_ac(
        time_step=hop_s, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ)
    times = pitch.xs()
    if len(times) == 0:  # shorter than Praat's analysis window
        return f0
    values = pitch.selected_array["frequency"]
    t = (np.arange(num_frames) + 0.5) * hop_s
    nearest = np.clip(np.round((t - times[0]) / pitch.dt).astype(int), 0, len(times) - 1)
    inside = np.abs(times[nearest] - t) <= pitch.dt / 2 + 1e-9  # beyond Praat's first/last frame: unvoiced
    return np.where(inside, values[nearest], 0.0)


def _as_contour(f0, name: str) -> np.ndarray:
    f0 = np.asarray(f0, dtype=np.float64)
    if f0.ndim != 1:
        raise ValueError(f"{name}: an F0 contour is 1-D, got shape {f0.shape}")
    if not np.isfinite(f0).all() or (f0 < 0).any():
        raise ValueError(f"{name}: F0 must be finite and >= 0 (0 = unvoiced)")
    return f0


def _zscore_log(f0_voiced: np.ndarray) -> np.ndarray:
    log_f0 = np.log(f0_voiced)
    centred = log_f0 - log_f0.mean()
    std = log_f0.std()
    return centred / std if std > 0 else centred


def normalised_contour(f0: np.ndarray) -> np.ndarray:
    """Voiced frames only, log-F0, z-normalised (empty if nothing is voiced)."""
    f0 = _as_contour(f0, "f0")
    voiced = f0[f0 > 0]
    return _zscore_log(voiced) if len(voiced) else voiced


def _common_voiced(ref_f0, hyp_f0) -> tuple[np.ndarray, np.ndarray]:
    ref, hyp = _as_contour(ref_f0, "reference F0"), _as_contour(hyp_f0, "hypothesis F0")
    length = min(len(ref), len(hyp))
    ref, hyp = ref[:length], hyp[:length]
    both = (ref > 0) & (hyp > 0)
    if not both.any():
        raise PitchError("no frame is voiced in both contours")
    return ref[both], hyp[both]


def contour_mse(ref_f0, hyp_f0) -> float:
    """MSE of the normalised contours on frames voiced in both (cut to the shorter)."""
    ref, hyp = _common_voiced(ref_f0, hyp_f0)
    return float(np.mean((_zscore_log(ref) - _zscore_log(hyp)) ** 2))


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """DTW with cost |a_i - b_j| and steps (1,0), (0,1), (1,1): the cheapest path's total cost
    over its number of cells.

    Filled one anti-diagonal (i + j = k) at a time, so each step is a vectorised numpy
    operation and only three diagonals are kept: minutes of singing (tens of thousands of
    frames) take seconds and little memory."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        raise PitchError("DTW of an empty contour")
    inf = np.inf
    # cost[k][i] / steps[k][i]: cheapest path to cell (i, k - i) and its number of cells
    cost_2, cost_1 = np.full(n, inf), np.full(n, inf)
    steps_2, steps_1 = np.zeros(n), np.zeros(n)
    for k in range(n + m - 1):
        lo, hi = max(0, k - m + 1), min(n - 1, k)
        i = np.arange(lo, hi + 1)
        local = np.abs(a[i] - b[k - i])
        cost, steps = np.full(n, inf), np.zeros(n)
        if k == 0:
            cost[0], steps[0] = local[0], 1
        else:
            prev_i = np.maximum(i - 1, 0)
            # predecessors: diagonal (i-1, j-1), from above (i-1, j), from the left (i, j-1)
            cand_cost = np.stack([np.where(i > 0, cost_2[prev_i], inf),
                                  np.where(i > 0, cost_1[prev_i], inf),
                                  cost_1[i]])
            cand_steps = np.stack([steps_2[prev_i], steps_1[prev_i], steps_1[i]])
            best = np.argmin(cand_cost, axis=0)  # first minimum: the diagonal wins ties
            cols = np.arange(len(i))
            cost[i] = cand_cost[best, cols] + local
            steps[i] = cand_steps[best, cols] + 1
        cost_2, cost_1, steps_2, steps_1 = cost_1, cost, steps_1, steps
    return float(cost_1[n - 1] / steps_1[n - 1])


def contour_dtw(ref_f0, hyp_f0) -> float:
    """DTW distance of the normalised contours (each over its own voiced frames), per path cell."""
    ref, hyp = normalised_contour(ref_f0), normalised_contour(hyp_f0)
    if len(ref) == 0 or len(hyp) == 0:
        raise PitchError("a contour has no voiced frame")
    return dtw_distance(ref, hyp)


def note_accuracy(ref_f0, hyp_f0, tolerance_semitones: float = 1.0) -> float:
    """Fraction of frames voiced in both whose F0 differ by at most ``tolerance_semitones``."""
    ref, hyp = _common_voiced(ref_f0, hyp_f0)
    semitones = 12.0 * np.abs(np.log2(hyp / ref))
    return float(np.mean(semitones <= tolerance_semitones))
