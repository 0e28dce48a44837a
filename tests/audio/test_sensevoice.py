"""SenseVoiceSmall encoder against the reference on tiny random weights
(shared/parity/sensevoice), official size, and the front-end-to-encoder path."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qinyu.audio import AudioError, load_audio, save_audio
from qinyu.audio.fbank import SenseVoiceFrontEnd
from qinyu.audio.sensevoice import SenseVoiceSmall, load_sensevoice


@pytest.fixture(scope="module")
def sv_dir(parity_dir):
    return parity_dir / "sensevoice"


def tiny(sv_dir, keep_query_frames=True):
    ec = json.loads((sv_dir / "config.json").read_text())["tiny_config"]["encoder_conf"]
    model = SenseVoiceSmall(vocab_size=40, output_size=ec["output_size"], linear_units=ec["linear_units"],
                            num_blocks=ec["num_blocks"], tp_blocks=ec["tp_blocks"],
                            keep_query_frames=keep_query_frames)
    model.load_state_dict(load_file(str(sv_dir / "weights.safetensors")))
    return model.eval()


@pytest.fixture(scope="module")
def golden(sv_dir):
    return load_file(str(sv_dir / "golden.safetensors"))


def test_encoder_matches_reference(sv_dir, golden):
    model = tiny(sv_dir)
    stages = {}
    with torch.no_grad():
        out, lengths = model.encode(golden["a_feats"][None], torch.tensor([61]), stages=stages)
        zh, _ = model.encode(golden["a_feats"][None], torch.tensor([61]), query_ids=[3, 1, 2, 14])
    assert torch.equal(stages["encoder_input"][0], golden["a_encoder_input"])
    assert (stages["after_posenc"][0] - golden["a_after_posenc"]).abs().max() < 1e-5
    assert (stages["encoders0"][0] - golden["a_encoders0_out"]).abs().max() < 1e-4
    assert (stages["after_norm"][0] - golden["a_after_norm"]).abs().max() < 1e-4
    assert (out[0] - golden["a_encoder_out"]).abs().max() < 1e-4 and int(lengths[0]) == 65
    assert (zh[0] - golden["a_encoder_out_zh_withitn"]).abs().max() < 1e-4
    logp = model.ctc.ctc_lo(out[0]).log_softmax(-1)
    assert (logp - golden["a_ctc_log_probs"]).abs().max() < 1e-4


def test_padded_batch_matches_reference(sv_dir, golden):
    model = tiny(sv_dir)
    with torch.no_grad():
        out, lengths = model.encode(golden["batch_feats_padded"], golden["batch_feat_lens"])
    assert lengths.tolist() == golden["batch_encoder_out_len"].tolist() == [65, 30]
    assert (out[0] - golden["batch_encoder_out"][0]).abs().max() < 1e-4
    assert (out[1, :30] - golden["batch_encoder_out"][1, :30]).abs().max() < 1e-4


def test_query_frames_kept_or_dropped(sv_dir, golden):
    keep, drop = tiny(sv_dir, True), tiny(sv_dir, False)
    with torch.no_grad():
        a, la = keep(golden["a_feats"][None], torch.tensor([61]))
        b, lb = drop(golden["a_feats"][None], torch.tensor([61]))
    assert a.shape[1] == 65 == keep.output_frames(61) and b.shape[1] == 61 == drop.output_frames(61)
    assert torch.equal(a[:, 4:], b) and int(la) - 4 == int(lb)


def test_frame_count_from_audio(sv_dir):
    """Encoder frames = ceil(T_fbank / 6) (+4 with query frames), T_fbank = 1 + (n - 400) // 160."""
    model = tiny(sv_dir)
    fe = SenseVoiceFrontEnd.from_mvn(sv_dir / "am.mvn")
    for n in (400, 16000, 23999, 58422):
        feats = torch.from_numpy(fe(np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1))
        with torch.no_grad():
            out, _ = model(feats[None], torch.tensor([len(feats)]))
        assert out.shape[1] == math.ceil((1 + (n - 400) // 160) / 6) + 4


def test_official_size_on_meta():
    with torch.device("meta"):
        model = SenseVoiceSmall()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) == 233_999_167
    assert (count(model.encoder), count(model.ctc), count(model.embed)) == (221_136_992, 12_853_215, 8_960)
    keys = set(model.state_dict())
    assert {"encoder.encoders0.0.self_attn.linear_q_k_v.weight", "encoder.encoders.48.self_attn.fsmn_block.weight",
            "encoder.tp_encoders.19.feed_forward.w_2.bias", "encoder.after_norm.weight", "encoder.tp_norm.bias",
            "ctc.ctc_lo.weight", "embed.weight"} <= keys
    assert "encoder.encoders.49.norm1.weight" not in keys and "encoder.tp_encoders.20.norm1.weight" not in keys


def test_load_official_folder(sv_dir, tmp_path):
    import yaml

    ec = json.loads((sv_dir / "config.json").read_text())["tiny_config"]["encoder_conf"]
    torch.save({"state_dict": load_file(str(sv_dir / "weights.safetensors"))}, tmp_path / "model.pt")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"encoder_conf": {k: ec[k] for k in (
        "output_size", "attention_heads", "linear_units", "num_blocks", "tp_blocks", "kernel_size")}}))
    model = load_sensevoice(tmp_path, keep_query_frames=False)
    assert model.ctc.ctc_lo.out_features == 40 and model.num_query_frames == 0
    with pytest.raises(FileNotFoundError, match="SenseVoiceSmall weights not found: .*model.pt; published as"):
        load_sensevoice(tmp_path / "nowhere")


def test_tiny_config_trains_inside_the_hybrid_lm():
    """A tiny SenseVoice as the LM's audio encoder: one optimiser step on a spoken
    conversation lowers the loss and changes the encoder's weights."""
    from qinyu.demo import synthetic_batch
    from qinyu.layout import TokenLayout, byte_tokenizer
    from qinyu.model import QinYuForConditionalGeneration, preset_config

    tok = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    cfg = preset_config("tiny", layout)
    cfg.audio_encoder = {"type": "sensevoice", "output_size": 32, "linear_units": 64, "num_blocks": 2,
                         "tp_blocks": 1, "vocab_size": 8, "keep_query_frames": False}
    cfg.audio_encoder_output_size = 32
    torch.manual_seed(0)
    model = QinYuForConditionalGeneration(cfg)
    batch = synthetic_batch(tok, layout, num_samples=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = model.audio_encoder.encoder.encoders0[0].self_attn.linear_q_k_v.weight.detach().clone()
    losses = []
    for _ in range(3):
        out = model(**batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0]
    assert not torch.equal(before, model.audio_encoder.encoder.encoders0[0].self_attn.linear_q_k_v.weight)


@pytest.mark.parametrize("case", ["empty", "zero-bytes", "not-audio", "nan", "stereo-48k", "8k", "ten-minutes",
                                  "silence"])
def test_bad_audio(case, sv_dir, tmp_path):
    path = tmp_path / "x.wav"
    rng = np.random.default_rng(0)
    if case == "empty":
        save_audio(path, np.zeros(0, dtype=np.float32), 16000)
    elif case == "zero-bytes":
        path.write_bytes(b"")
    elif case == "not-audio":
        path.write_text("this is not audio")
    elif case == "nan":
        with pytest.raises(AudioError, match="non-finite sample"):
            SenseVoiceFrontEnd()(np.array([0.0, np.nan] * 400, dtype=np.float32))
        return
    elif case == "stereo-48k":
        import soundfile as sf
        sf.write(str(path), rng.standard_normal((48000, 2)).astype(np.float32) * 0.1, 48000)
    elif case == "8k":
        save_audio(path, rng.standard_normal(8000).astype(np.float32) * 0.1, 8000)
    elif case == "ten-minutes":
        save_audio(path, rng.standard_normal(16000 * 600).astype(np.float32) * 0.01, 16000)
    elif case == "silence":
        save_audio(path, np.zeros(16000, dtype=np.float32), 16000)
    if case in ("empty", "zero-bytes", "not-audio"):
        with pytest.raises(AudioError, match=str(path.name)):
            load_audio(path, 16000)
        return
    wav, sr = load_audio(path, 16000)
    assert sr == 16000 and wav.ndim == 1 and wav.dtype == np.float32
    feats = SenseVoiceFrontEnd.from_mvn(sv_dir / "am.mvn")(wav)
    assert np.isfinite(feats).all() and len(feats) == math.ceil((1 + (len(wav) - 400) // 160) / 6)
    if case != "ten-minutes":  # ten minutes through the encoder is left to the bench
        with torch.no_grad():
            out, _ = tiny(sv_dir)(torch.from_numpy(feats)[None], torch.tensor([len(feats)]))
        assert torch.isfinite(out).all()
