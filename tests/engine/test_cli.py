import json

import numpy as np
import pytest

from qinyu.audio.io import load_audio, save_audio
from qinyu.cli import main
from qinyu.codec import load_codec
from qinyu.engine import Request, SamplingParams, generate
from qinyu.engine.session import load_session
from qinyu.model import new_checkpoint


@pytest.fixture(scope="module")
def speaking_checkpoint(tmp_path_factory, nano_codec_dir):
    """A tiny checkpoint whose config names a nano codec inside its folder."""
    import shutil

    path = new_checkpoint(tmp_path_factory.mktemp("ck") / "tiny")
    shutil.copytree(nano_codec_dir, path / "codec")
    cfg = json.loads((path / "config.json").read_text())
    cfg["codec"] = {"type": "nano", "path": "codec"}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def nano_codec_dir(tmp_path_factory):
    from qinyu.audio.espeak import espeak
    from qinyu.codec import NanoCodec

    corpus = [espeak(t, voice="en-us") for t in ("one two three", "the sun is warm today")]
    folder = tmp_path_factory.mktemp("codec") / "nano"
    NanoCodec.fit(corpus, iterations=2).save(folder)
    return folder


def test_chat_writes_the_decoded_reply(speaking_checkpoint, tmp_path, capsys):
    out = tmp_path / "reply.wav"
    assert main(["chat", "--model", str(speaking_checkpoint), "--text", "hello", "--max-steps", "30",
                 "--out", str(out)]) == 0
    wav, sr = load_audio(out)
    # the same reply decoded offline: identical up to 16-bit quantisation
    session = load_session(speaking_checkpoint, params=SamplingParams(max_steps=30))
    codes = generate(session.model, [session.request(session.user_turn(text="hello"))])[0].codes
    assert codes.shape[1] > 0
    expected = load_codec(speaking_checkpoint / "codec").decode(codes)
    assert sr == 16000 and len(wav) == len(expected)
    assert np.abs(wav - np.clip(expected, -1, 1)).max() < 2e-4


def test_tts_and_asr_commands(speaking_checkpoint, tmp_path, capsys):
    assert main(["tts", "--model", str(speaking_checkpoint), "--text", "good morning", "--max-steps", "20",
                 "--out", str(tmp_path / "t.wav")]) == 0
    assert (tmp_path / "t.wav").is_file()
    save_audio(tmp_path / "in.wav", np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    assert main(["asr", "--model", str(speaking_checkpoint), "--max-steps", "10", str(tmp_path / "in.wav")]) == 0


def test_chat_errors(speaking_checkpoint, tmp_path, capsys):
    assert main(["chat", "--model", str(speaking_checkpoint), "--text", "hi", "--voice", "nobody",
                 "--library", str(tmp_path / "v.sqlite")]) == 2
    assert "no voice named 'nobody'" in capsys.readouterr().err
    assert main(["chat", "--model", str(tmp_path / "missing"), "--text", "hi"]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err


def test_chat_with_a_voice_from_a_reference_clip(speaking_checkpoint, tmp_path):
    import torch

    from qinyu.audio.espeak import espeak
    from qinyu.voice.campplus import CAMPPlus, SpeakerEncoder

    torch.manual_seed(0)
    SpeakerEncoder(CAMPPlus(growth_rate=8, bn_size=2, init_channels=32, block_layers=(1, 1, 1))).save(tmp_path / "enc")
    save_audio(tmp_path / "ref.wav", *espeak("this is my voice", voice="en-us+f3"))
    session = load_session(speaking_checkpoint, voice_clip=tmp_path / "ref.wav", speaker_encoder=tmp_path / "enc",
                           params=SamplingParams(max_steps=8))
    assert session.persona.voice.shape == (192,) and np.abs(session.persona.voice).sum() > 0
    assert main(["chat", "--model", str(speaking_checkpoint), "--text", "hi", "--max-steps", "8",
                 "--voice-clip", str(tmp_path / "ref.wav"), "--speaker-encoder", str(tmp_path / "enc")]) == 0


def test_interactive_chat_keeps_history(speaking_checkpoint):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "qinyu", "chat", "--model", str(speaking_checkpoint), "--max-steps", "6"],
                       input="hello\nand again\n\n", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-1000:]
    assert r.stdout.count("> ") >= 3  # two turns answered, then the empty line quits


def test_checkpoint_names_its_cmvn_and_speaker_encoder(speaking_checkpoint, tmp_path, parity_dir):
    import shutil

    import torch

    from qinyu.voice.campplus import CAMPPlus, SpeakerEncoder

    ck = tmp_path / "ck"
    shutil.copytree(speaking_checkpoint, ck)
    shutil.copy(parity_dir / "sensevoice" / "am.mvn", ck / "am.mvn")
    torch.manual_seed(0)
    SpeakerEncoder(CAMPPlus(growth_rate=8, bn_size=2, init_channels=32, block_layers=(1, 1, 1))).save(ck / "spk")
    cfg = json.loads((ck / "config.json").read_text())
    cfg.update(cmvn="am.mvn", speaker_encoder="spk")
    (ck / "config.json").write_text(json.dumps(cfg))
    session = load_session(ck, params=SamplingParams(max_steps=4))
    assert session.front_end.cmvn is not None and session.speaker_encoder is not None
    turn = session.user_turn(audio=(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000))
    assert np.abs(turn.speaker).sum() > 0  # a real user voice, not the zero vector
