"""Pitch-contour metrics on synthetic contours with known answers, and Praat F0 on a sine sweep."""

import numpy as np
import pytest

from qinyu.eval.metrics.pitch import (PITCH_METHOD, PitchError, contour_dtw, contour_mse, dtw_distance, f0_contour,
                                      normalised_contour, note_accuracy)


def melody(frames: int, stretch: float = 1.0) -> np.ndarray:
    """A smooth made-up melody around 220 Hz at 100 frames/s; ``stretch`` > 1 sings it slower."""
    t = np.arange(frames) / 100 / stretch
    return 220 * 2 ** (np.sin(2 * np.pi * 0.7 * t) + 0.5 * np.sin(2 * np.pi * 1.9 * t))


def test_identical_contours():
    f0 = melody(300)
    assert contour_mse(f0, f0) == 0.0
    assert contour_dtw(f0, f0) == 0.0


def test_constant_factor_is_normalised_away():
    # log(c f) = log c + log f: the z-score removes the offset (a transposition, another register)
    f0 = melody(300)
    assert contour_mse(f0, 1.5 * f0) == pytest.approx(0.0, abs=1e-20)
    assert contour_dtw(f0, 0.5 * f0) == pytest.approx(0.0, abs=1e-12)
    assert note_accuracy(f0, 1.5 * f0) == 0.0  # note accuracy compares raw pitch


def test_time_stretch_dtw_small_mse_large():
    ref, slow = melody(300), melody(375, stretch=1.25)  # the same melody sung 25 % slower
    assert contour_mse(ref, slow) > 1.0  # frame by frame the two are out of step
    assert contour_dtw(ref, slow) < 0.03  # warping lines them up again


def test_unvoiced_frames_are_ignored():
    f0 = melody(200)
    gappy = f0.copy()
    gappy[50:80] = 0  # a rest
    assert len(normalised_contour(gappy)) == 170
    assert contour_mse(f0, gappy) < 0.01  # compared on the 170 frames voiced in both
    assert note_accuracy(f0, gappy) == 1.0
    # lengths differ: cut to the shorter
    assert contour_mse(f0, f0[:150]) == pytest.approx(0.0, abs=1e-20)


def test_normalised_contour():
    z = normalised_contour(np.array([0.0, 100.0, 200.0, 0.0, 400.0]))
    log = np.log([100.0, 200.0, 400.0])
    assert z == pytest.approx((log - log.mean()) / log.std())
    assert normalised_contour(np.array([0.0, 150.0, 150.0])) == pytest.approx([0.0, 0.0])  # constant: zeros
    assert len(normalised_contour(np.zeros(5))) == 0


def test_dtw_by_hand():
    # |a_i - b_j| for a = 0 1 2, b = 0 2:  rows [0 2] [1 1] [2 0]. The cheapest path
    # (0,0) (1,0) (2,1) costs 0 + 1 + 0 = 1 over 3 cells -> 1/3.
    assert dtw_distance([0.0, 1.0, 2.0], [0.0, 2.0]) == pytest.approx(1 / 3)
    # one sequence of length 1: every cell is on the path: (|3-1| + |3-3| + |3-5|) / 3
    assert dtw_distance([3.0], [1.0, 3.0, 5.0]) == pytest.approx(4 / 3)
    assert dtw_distance([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0


def test_note_accuracy_semitones():
    f0 = melody(200)
    assert note_accuracy(f0, f0 * 2 ** (2 / 12)) == 0.0  # two semitones sharp
    assert note_accuracy(f0, f0 * 2 ** (-0.3 / 12)) == 1.0  # 0.3 semitone flat
    assert note_accuracy(f0, f0 * 2 ** (0.3 / 12), tolerance_semitones=0.25) == 0.0
    half = f0.copy()
    half[:100] *= 2 ** (3 / 12)
    assert note_accuracy(f0, half) == 0.5


def test_nothing_to_compare():
    with pytest.raises(PitchError, match="voiced in both"):
        contour_mse(np.array([100.0, 0.0]), np.array([0.0, 100.0]))
    with pytest.raises(PitchError, match="voiced in both"):
        note_accuracy(np.zeros(3), np.zeros(3))
    with pytest.raises(PitchError, match="no voiced frame"):
        contour_dtw(np.zeros(3), melody(3))
    with pytest.raises(ValueError, match=">= 0"):
        contour_mse(np.array([-1.0]), np.array([1.0]))


def test_praat_f0_of_a_sine_sweep():
    # exponential sweep 150 -> 300 Hz over 1 s: instantaneous frequency 150 * 2^t
    sr = 16000
    t = np.arange(sr) / sr
    k = np.log(2.0)
    wav = 0.5 * np.sin(2 * np.pi * 150 * (np.exp(k * t) - 1) / k)
    f0 = f0_contour(wav, sr)
    assert len(f0) == 100  # 10 ms hop, frame k centred at (k + 0.5) x 10 ms
    truth = 150 * np.exp(k * (np.arange(100) + 0.5) * 0.01)
    voiced = f0 > 0
    assert voiced[5:95].all()  # everything but Praat's half window at each end
    assert np.max(np.abs(f0[voiced] / truth[voiced] - 1)) < 0.01
    # silence and a clip shorter than one hop are unvoiced, not errors
    assert not f0_contour(np.zeros(sr), sr).any()
    assert len(f0_contour(np.zeros(100), sr)) == 0


def test_method_states_every_choice():
    for word in ("Praat", "10 ms", "voiced", "log", "z-score", "DTW", "|a - b|", "divided by", "shorter",
                 "semitones"):
        assert word in PITCH_METHOD
