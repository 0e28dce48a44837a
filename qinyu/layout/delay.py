"""The delay pattern: codebook q is shifted right by q steps.

A T-frame utterance of 8 codebooks becomes T + 7 *steps*, each step holding one entry
per codebook. Entry values are in-codebook indices: 0..1023 are codes and 1024 + k is
the pad ``<|audio_q_k_pad|>``. Pads follow the reference exactly: at step t of
codebook q the pad index is t while t < q (leading), and t - T once t >= T + q
(trailing), so codebook q carries pads 0..q-1 before its codes and q..6 after them.
"""

from __future__ import annotations

import numpy as np

from .vocab import CODEBOOK_SIZE, NUM_CODEBOOKS, NUM_CODES

MAX_DELAY = NUM_CODEBOOKS - 1  # 7 extra steps per utterance


class DelayError(ValueError):
    pass


def check_codes(codes) -> np.ndarray:
    """Validate an (8, T) array of codec codes (0..1023) and return it as int64."""
    arr = np.asarray(codes)
    if arr.ndim != 2 or arr.shape[0] != NUM_CODEBOOKS:
        raise DelayError(f"audio codes must have shape (8, T), got {tuple(arr.shape)}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DelayError(f"audio codes must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = np.argwhere((arr < 0) | (arr >= NUM_CODES))
    if len(bad):
        q, t = bad[0]
        raise DelayError(
            f"audio code out of range at codebook {q}, frame {t}: {arr[q, t]} "
            f"(codes must be 0..{NUM_CODES - 1}; {len(bad)} bad value(s) in total)"
        )
    return arr


def pad_index(q: int, t: int, num_frames: int) -> int | None:
    """The pad index at step t of codebook q, or None where a code belongs."""
    if t < q:
        return t
    if t >= num_frames + q:
        return t - num_frames
    return None


def apply_delay(codes) -> np.ndarray:
    """(8, T) codes -> (T + 7, 8) delayed steps, pads written as 1024 + k."""
    codes = check_codes(codes)
    num_frames = codes.shape[1]
    steps = np.empty((num_frames + MAX_DELAY, NUM_CODEBOOKS), dtype=np.int64)
    for q in range(NUM_CODEBOOKS):
        steps[:q, q] = NUM_CODES + np.arange(q)
        steps[q:q + num_frames, q] = codes[q]
        steps[q + num_frames:, q] = NUM_CODES + np.arange(q, MAX_DELAY)
    return steps


def undo_delay(steps) -> np.ndarray:
    """(S, 8) delayed steps -> (8, S - 7) codes; the exact inverse of :func:`apply_delay`.

    Malformed input (wrong shape, too few steps, a pad where a code belongs, a code where
    a pad belongs, a wrong pad index, a value out of 0..1031) raises :class:`DelayError`
    naming the step and codebook.
    """
    arr = np.asarray(steps)
    if arr.ndim != 2 or arr.shape[1] != NUM_CODEBOOKS:
        raise DelayError(f"delayed steps must have shape (S, 8), got {tuple(arr.shape)}")
    if arr.shape[0] < MAX_DELAY:
        raise DelayError(f"delayed steps need at least {MAX_DELAY} steps, got {arr.shape[0]}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DelayError(f"delayed steps must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    num_frames = arr.shape[0] - MAX_DELAY
    for q in range(NUM_CODEBOOKS):
        col = arr[:, q]
        for t in np.flatnonzero((col < 0) | (col >= CODEBOOK_SIZE)):
            raise DelayError(f"step {t}, codebook {q}: value {col[t]} out of range 0..{CODEBOOK_SIZE - 1}")
        expected_pads = np.r_[np.arange(q), np.arange(q, MAX_DELAY)] + NUM_CODES
        got_pads = np.r_[col[:q], col[q + num_frames:]]
        if not np.array_equal(got_pads, expected_pads):
            i = int(np.flatnonzero(got_pads != expected_pads)[0])
            t = i if i < q else q + num_frames + (i - q)
            raise DelayError(
                f"step {t}, codebook {q}: expected pad {expected_pads[i]} "
                f"(<|audio_{q}_{expected_pads[i] - NUM_CODES}_pad|>), got {col[t]}"
            )
        codes = col[q:q + num_frames]
        if (codes >= NUM_CODES).any():
            t = q + int(np.flatnonzero(codes >= NUM_CODES)[0])
            raise DelayError(f"step {t}, codebook {q}: a pad ({col[t]}) where a code belongs")
    return np.stack([arr[q:q + num_frames, q] for q in range(NUM_CODEBOOKS)])
