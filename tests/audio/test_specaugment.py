"""SpecAugment of LFR features: the warp, the masks, the settings."""

import numpy as np
import pytest
import torch

from qinyu.audio.specaugment import SpecAugment, SpecAugmentError, warp_mel


def test_the_warp_moves_energy_up_the_mel_axis_in_every_stacked_frame():
    x = torch.zeros(4, 560)
    x.view(4, 7, 80)[..., 40] = 1.0
    assert warp_mel(x, 1.0).equal(x)
    warped = warp_mel(x, 0.8)  # bin k reads bin 0.8k: the peak moves to bin 50
    assert (warped.view(4, 7, 80).argmax(-1) == 50).all()


def test_augmentation_keeps_the_shape_leaves_the_input_alone_and_follows_the_rng():
    x = torch.randn(30, 560)
    before = x.clone()
    aug = SpecAugment()
    a, b = aug(x, np.random.default_rng(1)), aug(x, np.random.default_rng(1))
    assert a.shape == x.shape and x.equal(before)
    assert a.equal(b) and not a.equal(aug(x, np.random.default_rng(2)))


def test_masks_zero_whole_bands_and_runs_of_frames():
    x = torch.ones(40, 560)
    freq_only = SpecAugment(warp=0.0, freq_masks=3, freq_width=10, time_masks=0)(x, np.random.default_rng(0))
    zero_bins = (freq_only.view(40, 7, 80) == 0).all(0).all(0)  # a masked bin is zero in every frame and block
    assert 0 < int(zero_bins.sum()) <= 30 and (freq_only.view(40, 7, 80)[..., ~zero_bins] == 1).all()
    time_only = SpecAugment(warp=0.0, freq_masks=0, time_masks=2, time_width=4)(x, np.random.default_rng(3))
    zero_frames = (time_only == 0).all(1)
    assert int(zero_frames.sum()) <= 8 and (time_only[~zero_frames] == 1).all()
    assert SpecAugment(warp=0.0, freq_masks=0, time_masks=0)(x, np.random.default_rng(0)).equal(x)


def test_bad_settings_and_features_are_named():
    with pytest.raises(SpecAugmentError, match="unknown SpecAugment setting.*'width'"):
        SpecAugment.from_dict({"width": 3})
    with pytest.raises(SpecAugmentError, match="warp must be a number in"):
        SpecAugment(warp=1.5)
    with pytest.raises(SpecAugmentError, match="time_masks must be a non-negative integer"):
        SpecAugment(time_masks=-1)
    with pytest.raises(SpecAugmentError, match="freq_width must be below"):
        SpecAugment(freq_width=80)
    with pytest.raises(SpecAugmentError, match="a mapping"):
        SpecAugment.from_dict([0.1])
    with pytest.raises(SpecAugmentError, match=r"features must be \[frames, k\*80\]"):
        SpecAugment()(torch.zeros(3, 81), np.random.default_rng(0))
    assert SpecAugment.from_dict({"warp": 0.1, "time_masks": 0}) == SpecAugment(warp=0.1, time_masks=0)
