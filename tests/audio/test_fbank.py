import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from qinyu.audio.fbank import (
    FrontEndError, SenseVoiceFrontEnd, apply_lfr, campplus_fbank, kaldi_fbank, load_cmvn,
)


def test_silence_gives_the_log_floor():
    # Kaldi: zero power -> log(FLT_EPSILON) in every bin (hand-computed: ln 2^-23 = -15.9424)
    feats = kaldi_fbank(np.zeros(16000, dtype=np.float32), window="hamming", energy_floor=0.0)
    assert feats.shape == (98, 80)  # 1 + (16000 - 400) // 160
    np.testing.assert_allclose(feats, math.log(2.0 ** -23), atol=1e-4)


def test_sine_peaks_in_its_mel_bin():
    # 1 kHz: mel = 1127 ln(1 + 1000/700) = 999.98; bins span mel(20 Hz)..mel(8 kHz) in 81 steps
    t = np.arange(16000) / 16000
    feats = kaldi_fbank((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), window="povey")
    lo, hi = 1127 * math.log(1 + 20 / 700), 1127 * math.log(1 + 8000 / 700)
    expected = (1127 * math.log(1 + 1000 / 700) - lo) / ((hi - lo) / 81) - 1
    assert abs(int(np.median(feats.argmax(1))) - expected) <= 1.0


def test_sensevoice_front_end_matches_reference(parity_dir):
    d = parity_dir / "sensevoice"
    g = load_file(str(d / "golden.safetensors"))
    fe = SenseVoiceFrontEnd.from_mvn(d / "am.mvn")
    np.testing.assert_array_equal(load_cmvn(d / "am.mvn"), g["cmvn"])
    for x in "ab":
        assert np.abs(fe.fbank(g[f"input_{x}"]) - g[f"{x}_fbank"]).max() < 1e-3
        np.testing.assert_array_equal(apply_lfr(g[f"{x}_fbank"]), g[f"{x}_lfr"])
        assert np.abs(fe(g[f"input_{x}"]) - g[f"{x}_feats"]).max() < 2e-4


def test_campplus_front_end_matches_reference(parity_dir):
    g = load_file(str(parity_dir / "campplus" / "golden.safetensors"))
    assert np.abs(campplus_fbank(g["input_short"]) - g["short_fbank_cmn"]).max() < 1e-3


@pytest.mark.parametrize("frames", [1, 5, 6, 7, 61, 363])
def test_lfr_frame_count(frames):
    out = apply_lfr(np.random.default_rng(0).standard_normal((frames, 80)).astype(np.float32))
    assert out.shape == (math.ceil(frames / 6), 560)


def test_bad_cmvn_and_rate(tmp_path):
    (tmp_path / "am.mvn").write_text("<Nnet> nothing here </Nnet>")
    with pytest.raises(FrontEndError, match="no <AddShift> block"):
        load_cmvn(tmp_path / "am.mvn")
    with pytest.raises(FrontEndError, match="CMVN file not found"):
        load_cmvn(tmp_path / "missing.mvn")
    with pytest.raises(FrontEndError, match="need 16 kHz audio, got 8000 Hz"):
        SenseVoiceFrontEnd()(np.zeros(8000, dtype=np.float32), 8000)
    assert SenseVoiceFrontEnd()(np.zeros(100, dtype=np.float32)).shape == (0, 560)  # shorter than one frame


def test_write_cmvn_is_read_back_and_normalises(tmp_path):
    from qinyu.audio.fbank import SenseVoiceFrontEnd, load_cmvn, write_cmvn

    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(16000).astype(np.float32) * 0.1 * (k + 1) for k in range(3)]
    raw = np.concatenate([SenseVoiceFrontEnd()(w) for w in wavs])
    path = write_cmvn(tmp_path / "am.mvn", raw.mean(0), raw.std(0))
    cmvn = load_cmvn(path)
    assert cmvn.shape == (2, 560)
    normed = np.concatenate([SenseVoiceFrontEnd(cmvn)(w) for w in wavs])
    assert np.abs(normed.mean(0)).max() < 1e-3
    assert np.abs(normed.std(0) - 1).max() < 1e-3


def test_write_cmvn_refuses_a_zero_std(tmp_path):
    from qinyu.audio.fbank import FrontEndError, write_cmvn

    with pytest.raises(FrontEndError, match="std"):
        write_cmvn(tmp_path / "am.mvn", np.zeros(4), np.array([1.0, 0.0, 1.0, 1.0]))
