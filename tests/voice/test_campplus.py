"""CAM++ speaker encoder: parity with the reference on tiny random weights
(shared/parity/campplus), the official size, VITA's chunked embedding, bad input, and
training a tiny CAM++ that tells espeak-ng voices apart."""

import os
import re
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qinyu.audio.espeak import espeak, espeak_available
from qinyu.audio.fbank import campplus_fbank
from qinyu.audio.io import resample
from qinyu.voice.campplus import (GOLDEN_TINY_CONFIG, CAMPPlus, CAMPPlusConfig, SpeakerEncoder, SpeakerEncoderError,
                                  count_bn_running_stats, vita_chunks)
from qinyu.voice.speaker_train import train_speaker_encoder

XVECTOR_STAGES = ["tdnn", "block1", "transit1", "block2", "transit2", "block3", "transit3", "out_nonlinear"]


@pytest.fixture(scope="module")
def cam_dir(parity_dir):
    return parity_dir / "campplus"


@pytest.fixture(scope="module")
def golden(cam_dir):
    return load_file(str(cam_dir / "golden.safetensors"))


@pytest.fixture(scope="module")
def golden_weights(cam_dir):
    return load_file(str(cam_dir / "weights.safetensors"))


@pytest.fixture(scope="module")
def tiny(golden_weights):
    return SpeakerEncoder.from_state_dict(golden_weights, GOLDEN_TINY_CONFIG, "golden weights")


def key_pattern(key: str) -> str:
    """Layer indices -> N: head.layer1.0.conv1.weight -> head.layer1.N.conv1.weight,
    xvector.block2.tdnnd7.linear1.weight -> xvector.block2.tdnndN.linear1.weight."""
    return re.sub(r"tdnnd\d+", "tdnndN", re.sub(r"\.\d+\.", ".N.", key))


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- golden parity -----------------------------------------------------------------------
def test_golden_weights_load_strictly(tiny, golden_weights, cam_dir):
    model = CAMPPlus(feat_dim=80, embedding_size=192, growth_rate=8, bn_size=2, init_channels=32)
    model.load_state_dict(golden_weights, strict=True)
    assert set(model.state_dict()) == set(golden_weights)
    assert sum(p.numel() for p in model.parameters()) == 432_128
    assert sum(b.numel() for b in model.buffers()) == 19_866
    assert not tiny.model.training


def test_head_and_xvector_stages_match_golden(tiny, golden):
    x = golden["short_fbank_cmn"][None]
    with torch.no_grad():
        h = tiny.model.head(x.transpose(1, 2))
        torch.testing.assert_close(h[0], golden["short_head_out"], atol=1e-4, rtol=1e-4)
        for name in XVECTOR_STAGES:
            h = getattr(tiny.model.xvector, name)(h)
            torch.testing.assert_close(h[0], golden[f"short_xvector_{name}"], atol=1e-4, rtol=1e-4,
                                       msg=lambda m, name=name: f"xvector.{name}: {m}")
        stats = tiny.model.xvector.stats(h)
        torch.testing.assert_close(stats[0], golden["short_xvector_stats"], atol=1e-4, rtol=1e-4)
        embedding = tiny.model.xvector.dense(stats)
    torch.testing.assert_close(embedding[0], golden["short_embedding"], atol=1e-4, rtol=1e-4)
    # the whole forward is the same chain
    torch.testing.assert_close(torch.from_numpy(tiny.embed_features(x)[0]), golden["short_embedding"],
                               atol=1e-4, rtol=1e-4)


def test_front_end_matches_golden(golden):
    feats = campplus_fbank(golden["input_short"].numpy(), 16000)
    assert feats.shape == tuple(golden["short_fbank_cmn"].shape) == (372, 80)
    np.testing.assert_allclose(feats, golden["short_fbank_cmn"].numpy(), atol=1e-3, rtol=0)


def test_vita_chunking_rule(golden):
    long = golden["input_long"].numpy()
    chunks = vita_chunks(long)
    assert chunks.shape == (3, 160000)
    np.testing.assert_array_equal(chunks[:2].reshape(-1), long[:320000])
    # the last chunk is filled by repeating the whole clip from its start
    np.testing.assert_array_equal(chunks[2], np.concatenate([long[320000:], long[:107200]]))
    short = golden["input_short"].numpy()
    (chunk,) = vita_chunks(short)
    np.testing.assert_array_equal(chunk, np.tile(short, 3)[:160000])


@pytest.mark.parametrize("which", ["short", "long"])
def test_vita_embedding_matches_golden(tiny, golden, which):
    wav = golden[f"input_{which}"].numpy()
    feats = tiny.chunk_features(wav, 16000)
    golden_feats = golden[f"vita_{which}_chunks_fbank_cmn"].numpy()
    assert len(feats) == int(golden[f"vita_{which}_chunk_count"])
    np.testing.assert_allclose(feats, golden_feats, atol=1e-3, rtol=0)
    # the network on the reference's own features: one batched call
    chunk_embeddings = tiny.embed_features(golden_feats)
    np.testing.assert_allclose(chunk_embeddings, golden[f"vita_{which}_chunk_embeddings"].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(chunk_embeddings.mean(0), golden[f"vita_{which}_embedding"].numpy(),
                               atol=1e-4, rtol=1e-4)
    # end to end from the waveform (our fbank differs from torchaudio's by < 1e-3)
    embedding = tiny.embed(wav, 16000)
    reference = golden[f"vita_{which}_embedding"].numpy()
    assert embedding.shape == (192,) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, reference, atol=2e-3, rtol=0)
    assert cosine(embedding, reference) > 0.99999
    assert abs(np.linalg.norm(embedding) - np.linalg.norm(reference)) < 1e-2  # raw, not L2-normalised


# -- official size ---------------------------------------------------------------------------
def test_official_size_on_meta_device(golden_weights):
    with torch.device("meta"):
        model = CAMPPlus(feat_dim=80, embedding_size=192)
    assert model.config == CAMPPlusConfig()
    assert sum(p.numel() for p in model.parameters()) == 6_848_544
    assert count_bn_running_stats(model) == 82_176
    assert {key_pattern(k) for k in model.state_dict()} == {key_pattern(k) for k in golden_weights}
    assert "xvector.block2.tdnnd24.cam_layer.linear_local.weight" in model.state_dict()
    assert "xvector.block3.tdnnd17.linear1.weight" not in model.state_dict()


def test_official_weights():
    path = os.environ.get("QINYU_CAMPPLUS")
    if not path:
        pytest.skip("set QINYU_CAMPPLUS to campplus_cn_common.bin (modelscope "
                    "iic/speech_campplus_sv_zh-cn_16k-common) to test the official CAM++ weights")
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    encoder = SpeakerEncoder.from_official(path)
    a1 = encoder.embed(*espeak("The quick brown fox jumps over the lazy dog.", voice="en-us"))
    a2 = encoder.embed(*espeak("Please call Stella and ask her to bring these things.", voice="en-us"))
    b1 = encoder.embed(*espeak("The quick brown fox jumps over the lazy dog.", voice="en-us+f3"))
    for e in (a1, a2, b1):
        assert e.shape == (192,) and np.isfinite(e).all()
        # VITA's committed asset/*_speaker.pt vectors have norms of about 13-15
        assert 3 < np.linalg.norm(e) < 80
    assert cosine(a1, a2) > cosine(a1, b1)  # same voice, other words beats other voice, same words


# -- loading and saving ------------------------------------------------------------------------
def test_save_load_and_official_format(tiny, golden, golden_weights, tmp_path):
    wav = golden["input_short"].numpy()
    expected = tiny.embed(wav, 16000)

    loaded = SpeakerEncoder.load(tiny.save(tmp_path / "enc"))
    assert loaded.config == GOLDEN_TINY_CONFIG
    np.testing.assert_array_equal(loaded.embed(wav, 16000), expected)

    torch.save(golden_weights, tmp_path / "campplus_cn_common.bin")  # the official file format
    official = SpeakerEncoder.from_official(tmp_path / "campplus_cn_common.bin", GOLDEN_TINY_CONFIG)
    np.testing.assert_array_equal(official.embed(wav, 16000), expected)
    # at the official size these tiny weights do not fit, and the error says so
    with pytest.raises(SpeakerEncoderError, match="weights do not match"):
        SpeakerEncoder.from_official(tmp_path)


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(SpeakerEncoderError, match=r"campplus_cn_common\.bin.*iic/speech_campplus_sv_zh-cn_16k-common"):
        SpeakerEncoder.from_official(tmp_path / "campplus_cn_common.bin")
    with pytest.raises(SpeakerEncoderError, match="speaker_encoder.json"):
        SpeakerEncoder.load(tmp_path)
    (tmp_path / "bad.bin").write_bytes(b"not a pickle")
    with pytest.raises(SpeakerEncoderError, match="cannot read"):
        SpeakerEncoder.from_official(tmp_path / "bad.bin")


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("wav, rate, message", [
    (np.zeros(0, np.float32), 16000, "no samples"),
    (np.array([0.1, np.nan] * 8000, np.float32), 16000, "non-finite"),
    (np.zeros(16000, np.float32), 0, "sample rate"),
    (np.full(300, 0.1, np.float32), 16000, "shorter than one"),  # 18.75 ms
    (np.full(100, 0.1, np.float32), 8000, "shorter than one"),   # 12.5 ms at 8 kHz
    (np.zeros((2, 48000), np.float32), 48000, r"\(samples, channels\)"),
    (np.array(["a"] * 1000), 16000, "numbers"),
])
def test_bad_input_gives_a_clear_error(tiny, wav, rate, message):
    with pytest.raises(ValueError, match=message):
        tiny.embed(wav, rate)


def test_network_input_checks(tiny):
    with pytest.raises(SpeakerEncoderError, match="at least 3 feature frames"):
        tiny.embed_features(np.zeros((1, 2, 80), np.float32))
    with pytest.raises(SpeakerEncoderError, match=r"\[batch, frames, 80\]"):
        tiny.embed_features(np.zeros((100, 80), np.float32))
    with pytest.raises(SpeakerEncoderError, match="dtype must be fp32 or bf16, got 'fp16'"):
        tiny.embed(np.zeros(16000, np.float32), 16000, dtype="fp16")


def test_silence_and_shortest_clip_give_finite_vectors(tiny):
    for wav in (np.zeros(16000, np.float32), np.zeros(400, np.float32), np.full(400, 0.3, np.float32)):
        e = tiny.embed(wav, 16000)
        assert e.shape == (192,) and np.isfinite(e).all()


def test_long_clip_is_cut_to_90_seconds(tiny, golden):
    ten_minutes = np.resize(golden["input_long"].numpy(), 600 * 16000)
    assert len(tiny.chunk_features(ten_minutes, 16000)) == 9
    np.testing.assert_array_equal(tiny.embed(ten_minutes, 16000), tiny.embed(ten_minutes[:90 * 16000], 16000))


def test_other_rates_and_stereo(tiny, golden):
    wav16 = golden["input_short"].numpy()
    reference = tiny.embed(wav16, 16000)
    wav48 = resample(wav16, 16000, 48000)
    stereo48 = np.stack([wav48, wav48], axis=1)
    e48 = tiny.embed(stereo48, 48000)
    np.testing.assert_array_equal(e48, tiny.embed(wav48, 48000))  # downmix of equal channels
    # Only the top two mel bins (near 8 kHz, empty in this clip) change much on the
    # 16 -> 48 -> 16 kHz round trip; for scale, another utterance scores about 0.91.
    assert cosine(e48, reference) > 0.98
    e8 = tiny.embed(resample(wav16, 16000, 8000), 8000)
    assert e8.shape == (192,) and np.isfinite(e8).all()
    int16 = np.round(wav16 * 32768).astype(np.int16)  # the golden input is int16 / 32768
    np.testing.assert_array_equal(tiny.embed(int16, 16000), reference)


# -- training ----------------------------------------------------------------------------------
EN_TRAIN = ["The quick brown fox jumps over the lazy dog.",
            "Please call Stella and ask her to bring these things.",
            "She sells sea shells by the sea shore every summer.",
            "We will meet at the station after the rain stops.",
            "A warm cup of tea is the best way to start the day.",
            "The children played in the garden until it was dark.",
            "Open the window, the room is getting far too hot.",
            "My brother bought a new bicycle last weekend.",
            "Turn left at the bridge and walk along the river.",
            "Nobody knew why the old clock stopped at noon."]
EN_HELD_OUT = ["Seven green apples were lying on the kitchen table.",
               "How long does it take to fly from London to Tokyo?",
               "The music was so loud that we could not hear each other.",
               "Remember to water the plants before you leave."]
ZH_TRAIN = ["ni3 hao3, jin1 tian1 tian1 qi4 hen3 hao3.", "wo3 men5 qu4 gong1 yuan2 san4 bu4 ba5.",
            "zhe4 ben3 shu1 fei1 chang2 you3 yi4 si5.", "ta1 mei3 tian1 zao3 shang4 he1 yi1 bei1 cha2.",
            "qing3 ba3 chuang1 hu4 da3 kai1 yi2 xia4.", "xiao3 hai2 zi5 zai4 hua1 yuan2 li3 wan2 shua3.",
            "ming2 tian1 wo3 yao4 qu4 bei3 jing1 chu1 chai1.", "zhe4 jia1 fan4 dian4 de5 cai4 hen3 hao3 chi1.",
            "wo3 de5 peng2 you5 xi3 huan1 chang4 ge1.", "huo3 che1 ba1 dian3 zhong1 chu1 fa1."]
ZH_HELD_OUT = ["qiu1 tian1 de5 shu4 ye4 bian4 cheng2 le5 huang2 se4.",
               "ni3 zhi1 dao4 qu4 ji1 chang3 zen3 me5 zou3 ma5?",
               "ta1 zheng4 zai4 tu2 shu1 guan3 li3 kan4 shu1.",
               "wan3 shang4 wo3 men5 yi4 qi3 kan4 dian4 ying3 ba5."]
# "en-gb+m3" and "en-gb+f2" are not used: espeak-ng 1.51 ignores variants on "en-gb" and
# gives both the plain en-gb voice; "en+m3"/"en+f2" are British English with the variant.
VOICES = ["en-us", "en-us+f3", "en+m3", "en-us+f4", "en+f2", "en-us+m7", "cmn-latn-pinyin", "cmn-latn-pinyin+f3"]
TINY_TRAIN_CONFIG = CAMPPlusConfig(growth_rate=8, bn_size=2, init_channels=32, block_layers=(2, 2, 2), head_channels=8)


@pytest.fixture(scope="module")
def voice_clips():
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    train, held_out = [], []
    for voice in VOICES:
        sentences, others = (ZH_TRAIN, ZH_HELD_OUT) if voice.startswith("cmn") else (EN_TRAIN, EN_HELD_OUT)
        train += [(*espeak(s, voice=voice), voice) for s in sentences]
        held_out += [(*espeak(s, voice=voice), voice) for s in others]
    # every voice really is a different voice (espeak-ng silently ignores unknown variants)
    first = [w for w, _, v in train if v.startswith("en")][::len(EN_TRAIN)]
    assert all(not np.array_equal(a[:20000], b[:20000]) for i, a in enumerate(first) for b in first[i + 1:])
    return train, held_out


@pytest.fixture
def one_thread():
    """The loop is many small ops: one thread is as fast as two on 2 cores and does not
    stall when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_separates_espeak_voices(voice_clips, one_thread):
    train, held_out = voice_clips
    log = []
    start = time.perf_counter()
    encoder = train_speaker_encoder(train, TINY_TRAIN_CONFIG, steps=250, lr=3e-3, seed=0, batch_size=16,
                                    crop_frames=100, margin=0.2, progress=lambda *a: log.append(a))
    train_seconds = time.perf_counter() - start
    assert len(log) == 250 and log[-1][:2] == (250, 250)
    assert not encoder.model.training

    def unit(e):
        return e / np.linalg.norm(e)

    centroids = np.stack([unit(np.mean([unit(encoder.embed(w, sr)) for w, sr, v in train if v == voice], axis=0))
                          for voice in VOICES])
    predicted = [VOICES[int(np.argmax(centroids @ unit(encoder.embed(w, sr))))] for w, sr, _ in held_out]
    accuracy = np.mean([p == v for p, (_, _, v) in zip(predicted, held_out, strict=True)])
    print(f"\ntiny CAM++ ({sum(p.numel() for p in encoder.model.parameters())} parameters): "
          f"trained 250 steps in {train_seconds:.1f} s, last loss {log[-1][2]:.3f}, "
          f"held-out nearest-centroid accuracy {accuracy:.3f} on {len(held_out)} clips")
    assert accuracy >= 0.9


def test_training_is_deterministic(voice_clips, one_thread):
    clips = voice_clips[0][::5]
    kwargs = {"config": TINY_TRAIN_CONFIG, "steps": 3, "batch_size": 4, "crop_frames": 50}
    a = train_speaker_encoder(clips, seed=7, **kwargs).model.state_dict()
    b = train_speaker_encoder(clips, seed=7, **kwargs).model.state_dict()
    c = train_speaker_encoder(clips, seed=8, **kwargs).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bf16_training_and_embedding(voice_clips, one_thread):
    """bf16 autocast (the speedrun's CAM++ step): the loss falls as in fp32, and a bf16
    embedding of a clip points where the fp32 one does."""
    clips = voice_clips[0][::3]
    losses = {}
    for dtype in ("fp32", "bf16"):
        log = []
        encoder = train_speaker_encoder(clips, TINY_TRAIN_CONFIG, steps=30, lr=3e-3, seed=0, batch_size=8,
                                        crop_frames=100, dtype=dtype, progress=lambda *a: log.append(a[2]))
        losses[dtype] = (np.mean(log[:5]), np.mean(log[-5:]))
        assert all(p.dtype == torch.float32 for p in encoder.model.parameters())
    for first, last in losses.values():
        assert last < 0.8 * first, losses
    assert abs(losses["bf16"][1] - losses["fp32"][1]) < 0.25 * losses["fp32"][0], losses
    a = np.stack([encoder.embed(w, sr) for w, sr, _ in clips[:6]])
    b = np.stack([encoder.embed(w, sr, dtype="bf16") for w, sr, _ in clips[:6]])
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(a, b), cosine


def test_training_input_errors():
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    with pytest.raises(SpeakerEncoderError, match="at least 2 speakers"):
        train_speaker_encoder([(wav, 16000, "a"), (wav, 16000, "a")], TINY_TRAIN_CONFIG, steps=1)
    with pytest.raises(SpeakerEncoderError, match=r"training clip 1 \(speaker 'b'\)"):
        train_speaker_encoder([(wav, 16000, "a"), (wav[:100], 16000, "b")], TINY_TRAIN_CONFIG, steps=1)
    with pytest.raises(SpeakerEncoderError, match="batch_size"):
        train_speaker_encoder([(wav, 16000, "a"), (wav, 16000, "b")], TINY_TRAIN_CONFIG, steps=1, batch_size=1)
    with pytest.raises(SpeakerEncoderError, match="dtype must be fp32 or bf16, got 'fp16'"):
        train_speaker_encoder([(wav, 16000, "a"), (wav, 16000, "b")], TINY_TRAIN_CONFIG, steps=1, dtype="fp16")
