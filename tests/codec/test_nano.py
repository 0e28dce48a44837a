import numpy as np
import pytest

from qinyu.codec import ChunkedStreamDecoder, CodecError, NanoCodec, codec_for_checkpoint, load_codec, shift_pitch
from qinyu.codec.nano import NanoCodecConfig, analyse

from .conftest import praat_f0


def test_interface(nano_codec, speech):
    wav, sr = speech
    c = nano_codec
    assert (c.frame_rate, c.input_sample_rate, c.output_sample_rate) == (12.5, 16000, 16000)
    assert (c.num_codebooks, c.codebook_size, c.samples_per_frame) == (8, 1024, 1280)
    codes = c.encode(wav, sr)
    frames = -(-len(wav) // 1280)
    assert codes.shape == (8, frames) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 1024
    out = c.decode(codes)
    assert out.shape == (frames * 1280,) and out.dtype == np.float32 and np.isfinite(out).all()


def test_reconstruction_keeps_pitch_and_spectrum(nano_codec, speech):
    wav, sr = speech
    out = nano_codec.decode(nano_codec.encode(wav, sr))
    a, b = praat_f0(wav), praat_f0(out[:len(wav)])
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    voiced = (a > 0) & (b > 0)
    err = 1200 * np.log2(b[voiced] / a[voiced])
    fine = np.abs(err) < 1200 * np.log2(1.2)
    assert fine.mean() > 0.95
    assert np.sqrt(np.mean(err[fine] ** 2)) < 50  # cents
    assert np.mean((a > 0) != (b > 0)) < 0.12  # voicing decisions
    cfg = nano_codec.config
    x = np.pad(wav, (0, len(out) - len(wav))).astype(np.float64)
    lsd = np.sqrt(np.mean((10 / np.log(10) * (analyse(x, cfg).log_bands - analyse(out.astype(np.float64), cfg).log_bands)) ** 2))
    assert lsd < 8.0  # dB; bench/codec.py reports it properly


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_offline_exactly(nano_codec, speech, seed):
    codes = nano_codec.encode(*speech)
    offline = nano_codec.decode(codes)
    rng = np.random.default_rng(seed)
    stream = nano_codec.stream_decoder()
    parts, t = [], 0
    while t < codes.shape[1]:
        n = int(rng.integers(0, 5))  # includes empty pushes
        parts.append(stream.push(codes[:, t:t + n]))
        t += n
    parts.append(stream.flush())
    assert np.array_equal(np.concatenate(parts), offline)


def test_chunked_decoder_bounded_at_joins(nano_codec, speech):
    """The generic chunked decoder (left context + cross-fade) on a decoder that is not
    frame-local (excitation phase restarts per chunk): same length, and the log
    spectrum stays within 2 dB of the offline decode."""
    codes = nano_codec.encode(*speech)
    offline = nano_codec.decode(codes)
    for first in (4, 20):
        stream = ChunkedStreamDecoder(nano_codec, schedule=(20, 6, 8), first_chunk=first, fade_seconds=0.05,
                                      window="hann")
        out = np.concatenate([stream.push(codes[:, t:t + 3]) for t in range(0, codes.shape[1], 3)] + [stream.flush()])
        assert len(out) == len(offline)
        cfg = nano_codec.config
        lsd = np.sqrt(np.mean((10 / np.log(10) * (analyse(out.astype(np.float64), cfg).log_bands -
                                                  analyse(offline.astype(np.float64), cfg).log_bands)) ** 2))
        assert lsd < 2.0


def test_chunked_decoder_short_and_empty_streams(nano_codec, speech):
    codes = nano_codec.encode(*speech)[:, :3]  # shorter than the first chunk
    stream = ChunkedStreamDecoder(nano_codec)
    assert stream.push(codes).size == 0
    assert np.array_equal(stream.flush(), nano_codec.decode(codes))
    empty = ChunkedStreamDecoder(nano_codec)
    assert empty.flush().size == 0  # a text-only reply: no crash, no audio
    with pytest.raises(ValueError, match="positive frame counts"):
        ChunkedStreamDecoder(nano_codec, first_chunk=0)


def test_pitch_shift_moves_f0(nano_codec, speech):
    codes = nano_codec.encode(*speech)
    up = codes.copy()
    up[0] = shift_pitch(codes[0], 7, nano_codec.config)  # a fifth up
    a, b = praat_f0(nano_codec.decode(codes)), praat_f0(nano_codec.decode(up))
    voiced = (a > 0) & (b > 0)
    shift = np.median(1200 * np.log2(b[voiced] / a[voiced]))
    assert abs(shift - 700) < 50
    assert np.array_equal(up[0] == 0, codes[0] == 0)  # unvoiced frames stay unvoiced


def test_save_load_round_trip(nano_codec, speech, tmp_path):
    nano_codec.save(tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert isinstance(loaded, NanoCodec)
    codes = nano_codec.encode(*speech)
    assert np.array_equal(loaded.encode(*speech), codes)
    assert np.array_equal(loaded.decode(codes), nano_codec.decode(codes))


def test_codec_named_by_checkpoint(nano_codec, tmp_path):
    import json

    nano_codec.save(tmp_path / "ck" / "codec")
    (tmp_path / "ck" / "config.json").write_text(json.dumps({"codec": {"type": "nano", "path": "codec"}}))
    assert isinstance(codec_for_checkpoint(tmp_path / "ck"), NanoCodec)
    (tmp_path / "ck" / "config.json").write_text(json.dumps({"codec": {"type": "xy_tokenizer", "path": "codec"}}))
    with pytest.raises(CodecError, match="names a 'xy_tokenizer' codec but .* holds a 'nano' codec"):
        codec_for_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text(json.dumps({}))
    with pytest.raises(CodecError, match="names no codec"):
        codec_for_checkpoint(tmp_path / "ck")


# -- bad input ------------------------------------------------------------------------

def test_bad_waveforms(nano_codec):
    from qinyu.audio.io import AudioError

    with pytest.raises(AudioError, match="no samples"):
        nano_codec.encode(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="non-finite sample .* at index 3"):
        nano_codec.encode(np.array([0, 0, 0, np.nan] * 100, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="sample rate must be a positive integer"):
        nano_codec.encode(np.zeros(1600, dtype=np.float32), 0)
    with pytest.raises(AudioError, match="samples must be numbers"):
        nano_codec.encode(np.array(["a", "b"]), 16000)


def test_edge_waveforms_give_correct_results(nano_codec, speech):
    silent = nano_codec.encode(np.zeros(16000, dtype=np.float32), 16000)
    assert silent.shape == (8, 13) and (silent[0] == 0).all()  # silence is unvoiced
    assert np.abs(nano_codec.decode(silent)).max() < 0.05
    tiny = nano_codec.encode(np.random.default_rng(0).standard_normal(100).astype(np.float32) * 0.1, 16000)
    assert tiny.shape == (8, 1)  # shorter than one frame: padded to one
    wav, sr = speech
    clipped = nano_codec.encode(np.clip(wav * 20, -1, 1), sr)
    assert clipped.shape == nano_codec.encode(wav, sr).shape
    # other sample rates are resampled; int16 and stereo input are accepted
    from qinyu.audio.io import resample

    at8k = nano_codec.encode(resample(wav, sr, 8000), 8000)
    assert abs(at8k.shape[1] - -(-len(wav) // 1280)) <= 1
    stereo = np.stack([wav, wav], axis=1)
    assert np.array_equal(nano_codec.encode((stereo * 32767).astype(np.int16), sr).shape, clipped.shape)


def test_bad_codes(nano_codec):
    with pytest.raises(CodecError, match=r"code out of range at codebook 2, frame 1: 1024"):
        bad = np.zeros((8, 3), dtype=np.int64)
        bad[2, 1] = 1024
        nano_codec.decode(bad)
    with pytest.raises(CodecError, match=r"shape \(8, T\)"):
        nano_codec.decode(np.zeros((7, 3), dtype=np.int64))
    with pytest.raises(CodecError, match="integers"):
        nano_codec.decode(np.zeros((8, 3)))
    assert nano_codec.decode(np.zeros((8, 0), dtype=np.int64)).size == 0


def test_config_validation():
    with pytest.raises(ValueError, match="whole number"):
        NanoCodecConfig(frame_rate=12.3)
    with pytest.raises(CodecError, match="codec folder not found"):
        load_codec("/nonexistent/codec")


def test_cli_encode_decode_and_repitch(nano_codec, speech, tmp_path, capsys):
    from qinyu.audio.io import load_audio, save_audio
    from qinyu.cli import main

    nano_codec.save(tmp_path / "codec")
    save_audio(tmp_path / "in.wav", *speech)
    assert main(["codec", "encode", str(tmp_path / "in.wav"), "--codec", str(tmp_path / "codec"),
                 "--out", str(tmp_path / "codes.npy")]) == 0
    codes = np.load(tmp_path / "codes.npy")
    assert codes.shape == (8, -(-len(speech[0]) // 1280))
    assert main(["codec", "decode", str(tmp_path / "codes.npy"), "--codec", str(tmp_path / "codec"),
                 "--out", str(tmp_path / "out.wav")]) == 0
    out, sr = load_audio(tmp_path / "out.wav")
    assert sr == 16000 and len(out) == codes.shape[1] * 1280
    assert main(["codec", "decode", str(tmp_path / "in.wav"), "--codec", str(tmp_path / "codec"), "--semitones",
                 "12", "--out", str(tmp_path / "up.wav")]) == 0
    assert main(["codec", "encode", str(tmp_path / "missing.wav"), "--codec", str(tmp_path / "codec"),
                 "--out", str(tmp_path / "x.npy")]) == 2
    assert "audio file not found" in capsys.readouterr().err


def test_cli_fit_on_audio_dir(tmp_path, capsys):
    from qinyu.audio.espeak import espeak
    from qinyu.audio.io import save_audio
    from qinyu.cli import main
    from qinyu.codec import load_codec

    (tmp_path / "audio" / "sub").mkdir(parents=True)
    for i, text in enumerate(["one two three four five", "the sun is warm", "ni3 hao3 ma5"]):
        wav, sr = espeak(text, voice="cmn-latn-pinyin" if i == 2 else "en-us")
        save_audio(tmp_path / "audio" / ("sub" if i else "") / f"{i}.wav", wav, sr)
    assert main(["codec", "fit", "--audio-dir", str(tmp_path / "audio"), "--out", str(tmp_path / "codec"),
                 "--iterations", "2"]) == 0
    codec = load_codec(tmp_path / "codec")
    assert codec.info["source"] == str(tmp_path / "audio") and codec.info["fitted_on_seconds"] > 2
    assert main(["codec", "fit", "--audio-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "c2")]) == 2
    assert "audio folder not found" in capsys.readouterr().err
