"""Data preparation (qinyu.data.prepare) on a toy espeak-ng corpus with a quickly fitted
nano codec and a tiny random CAM++: output format and shapes, voices, the cache (identical
audio once, re-runs and resumed runs compute nothing twice), bad items, workers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from qinyu.audio.espeak import espeak, espeak_available
from qinyu.audio.io import load_audio, resample

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed (make installs it)")

REPO = Path(__file__).resolve().parents[2]
SENTENCES = ["Hello there, how are you?", "The weather is nice today.", "Please open the window.",
             "I like green tea with honey.", "Where is the train station?", "We should leave at seven.",
             "Can you sing a song for me?", "That sounds wonderful."]


def say(path: Path, text: str, voice="en-us", pitch=50, speed=170) -> Path:
    wav, sr = espeak(text, voice=voice, pitch=pitch, speed=speed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wav, sr)
    return path


def write_jsonl(path: Path, rows) -> Path:
    """Rows are dicts (one JSON line each) or raw strings (written as they are)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def chat(user: str | None, reply: str, audios: list[str], **extra) -> dict:
    """user: text, or None for user speech; reply: assistant content."""
    messages = [{"role": "user", "content": user if user is not None else "<|audio|>"},
                {"role": "assistant", "content": reply}]
    return {"messages": messages, "audios": audios, **extra}


def cache_files(out: Path) -> dict[str, int]:
    """relative path -> mtime (ns) of every cache entry."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted((out / "cache").glob("*/*.npy"))}


def same_output(a: Path, b: Path, stem: str) -> None:
    assert (a / f"{stem}.prepared.jsonl").read_text() == (b / f"{stem}.prepared.jsonl").read_text()
    assert list(cache_files(a)) == list(cache_files(b))
    for rel in cache_files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """wavs/ (user voice m3, assistant voice f3, a clip), a nano codec, a tiny CAM++, voice tables."""
    from qinyu.codec import NanoCodec
    from qinyu.voice.campplus import CAMPPlus, SpeakerEncoder
    from qinyu.voice.library import VoiceLibrary

    root = tmp_path_factory.mktemp("corpus")
    for i, text in enumerate(SENTENCES[:4]):
        say(root / f"wavs/q{i}.wav", text, voice="en-us+m3", pitch=40)
        say(root / f"wavs/a{i}.wav", SENTENCES[-1 - i], voice="en-us+f3", pitch=60)
    say(root / "wavs/clip.wav", "This is the voice I want.", voice="en-gb", pitch=70)
    wavs = [load_audio(p) for p in sorted((root / "wavs").glob("*.wav"))]
    NanoCodec.fit(wavs, iterations=2).save(root / "codecs/nano")
    torch.manual_seed(0)
    SpeakerEncoder(CAMPPlus(growth_rate=8, bn_size=2, init_channels=32, block_layers=(1, 1, 1))).save(
        root / "encoders/campplus")
    rng = np.random.default_rng(0)
    presets = {"tian": rng.standard_normal(192).astype(np.float32),
               "yun": rng.standard_normal(192).astype(np.float32)}
    torch.save({k: torch.from_numpy(v) for k, v in presets.items()}, root / "spk2embeds.pt")
    library = VoiceLibrary(root / "voices.sqlite")
    library.add("tian", presets["yun"])  # another vector under the same name: the table decides
    vector = rng.standard_normal(192).astype(np.float32)
    np.save(root / "vec.npy", vector)
    torch.save(torch.from_numpy(vector * 2), root / "vec.pt")
    return {"root": root, "presets": presets, "vector": vector}


def config(corpus, out: Path, inputs, **overrides) -> dict:
    root = corpus["root"]
    cfg = {"inputs": [str(p) for p in inputs], "output": str(out), "codec": str(root / "codecs/nano"),
           "speaker_encoder": str(root / "encoders/campplus"), "workers": 1}
    cfg.update(overrides)
    return cfg


def encoder(corpus):
    from qinyu.voice.campplus import SpeakerEncoder

    return SpeakerEncoder.load(corpus["root"] / "encoders/campplus")


# --------------------------------------------------------------------------------------
def test_prepared_format_shapes_and_default_voice(corpus, tmp_path, capsys):
    """YAML config with relative paths, main_prepare's exit code, every field and shape,
    features/CAM++ values, the default voice (mean of the assistant audios' vectors), manifest."""
    from qinyu.audio.fbank import SenseVoiceFrontEnd
    from qinyu.data.prepare import main_prepare

    root = corpus["root"]
    rows = [
        {"id": "speech-chat", **chat(None, "Hello there!<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"])},
        chat("Say something.", "<|audio|>", ["wavs/a1.wav"], task="tts"),
        chat("Transcribe this.\n<|audio|>", "Please open the window.", ["wavs/q1.wav"], task="asr"),
        {"messages": [{"role": "system", "content": "You are kind."}, {"role": "human", "content": "<|audio|>"},
                      {"role": "gpt", "content": "Fine."}, {"role": "human", "content": "<|audio|>"},
                      {"role": "gpt", "content": "One.<|audio|>Two.<|audio|>"}],
         "audios": ["wavs/q2.wav", "wavs/q3.wav", "wavs/a2.wav", "wavs/a3.wav"], "meta": {"source": "toy"}},
    ]
    write_jsonl(root / "chat.jsonl", rows)
    (tmp_path / "prepare.yaml").write_text(yaml.safe_dump({
        "inputs": [os.path.relpath(root / "chat.jsonl", tmp_path)], "output": "out",
        "codec": os.path.relpath(root / "codecs/nano", tmp_path),
        "speaker_encoder": os.path.relpath(root / "encoders/campplus", tmp_path), "workers": 1}))

    assert main_prepare(str(tmp_path / "prepare.yaml")) == 0
    assert "prepared 4 of 4 sample(s)" in capsys.readouterr().out
    out = tmp_path / "out"
    lines = read_jsonl(out / "chat.prepared.jsonl")
    assert (out / "chat.errors.jsonl").read_text() == ""
    assert [x["id"] for x in lines] == ["speech-chat", "chat.jsonl:2", "chat.jsonl:3", "chat.jsonl:4"]
    assert [x["task"] for x in lines] == ["chat", "tts", "asr", "chat"]
    assert lines[3]["messages"] == rows[3]["messages"] and lines[3]["meta"] == {"source": "toy"}
    assert [[a["role"] for a in x["audio"]] for x in lines] == [
        ["user", "assistant"], ["assistant"], ["user"], ["user", "user", "assistant", "assistant"]]

    enc, front = encoder(corpus), SenseVoiceFrontEnd()
    for line, row in zip(lines, rows):
        for a, source in zip(line["audio"], row["audios"]):
            assert a["source"] == source
            wav, sr = load_audio(root / source)
            if a["role"] == "user":
                assert set(a) == {"role", "source", "features", "frames", "speaker"}
                feats = np.load(out / a["features"])
                assert feats.dtype == np.float32 and feats.shape == (a["frames"], 560)
                np.testing.assert_array_equal(feats, front(resample(wav, sr, 16000)))
                speaker = np.load(out / a["speaker"])
                assert speaker.dtype == np.float32 and speaker.shape == (192,)
                np.testing.assert_allclose(speaker, enc.embed(wav, sr), rtol=1e-5, atol=1e-5)
            else:
                assert set(a) == {"role", "source", "codes", "frames"}
                codes = np.load(out / a["codes"])
                assert codes.dtype == np.int64 and codes.shape == (8, a["frames"])
                assert codes.min() >= 0 and codes.max() < 1024
                assert abs(a["frames"] - len(wav) / sr * 12.5) <= 1  # 12.5 frames per second

    # the default voice: the mean of the CAM++ vectors of the sample's assistant audios
    def embed(name):
        return enc.embed(*load_audio(root / name))

    np.testing.assert_allclose(np.load(out / lines[0]["voice"]), embed("wavs/a0.wav"), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(out / lines[3]["voice"]), (embed("wavs/a2.wav") + embed("wavs/a3.wav")) / 2,
                               rtol=1e-5, atol=1e-5)
    assert lines[2]["voice"] is None  # no assistant speech to take a voice from
    assert all(x["voice"] is None or x["voice"].startswith("cache/voice/") for x in lines)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["codec"] == {"type": "nano", "frame_rate": 12.5}
    assert manifest["inputs"][0]["samples"] == 4 and manifest["inputs"][0]["prepared"] == 4
    assert manifest["inputs"][0]["skipped"] == 0 and manifest["config"]["workers"] == 1
    seconds = {"user": 0.0, "assistant": 0.0}
    for x in lines:
        for a in x["audio"]:
            seconds[a["role"]] += sf.info(str(root / a["source"])).duration
    assert manifest["seconds"]["user"] == pytest.approx(seconds["user"], abs=1e-2)
    assert manifest["seconds"]["assistant"] == pytest.approx(seconds["assistant"], abs=1e-2)
    assert seconds["user"] > 3 and seconds["assistant"] > 3


def test_voice_sources(corpus, tmp_path):
    """voice.speaker from a voice library / a spk2embeds .pt, voice.vector .npy / .pt,
    voice.clip; an unknown name is skipped with its line."""
    from qinyu.data.prepare import prepare

    root = corpus["root"]
    data = write_jsonl(root / "voices.jsonl", [
        chat(None, "Hi.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"], voice={"speaker": "tian"}),
        chat(None, "Hi.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"], voice={"vector": "vec.npy"}),
        chat(None, "Hi.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"], voice={"vector": "vec.pt"}),
        chat(None, "Hi.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"], voice={"clip": "wavs/clip.wav"}),
        chat(None, "Hi.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"], voice={"speaker": "nobody"}),
    ])
    report = prepare(config(corpus, tmp_path / "lib", [data], voices=str(root / "voices.sqlite")))
    lines = read_jsonl(tmp_path / "lib/voices.prepared.jsonl")
    assert report.prepared == 4 and report.skipped == 1
    voices = [np.load(tmp_path / "lib" / x["voice"]) for x in lines]
    np.testing.assert_array_equal(voices[0], corpus["presets"]["yun"])  # the library's "tian"
    np.testing.assert_array_equal(voices[1], corpus["vector"])
    np.testing.assert_array_equal(voices[2], corpus["vector"] * 2)
    np.testing.assert_allclose(voices[3], encoder(corpus).embed(*load_audio(root / "wavs/clip.wav")),
                               rtol=1e-5, atol=1e-5)
    errors = read_jsonl(tmp_path / "lib/voices.errors.jsonl")
    assert [(e["line"], e["field"]) for e in errors] == [(5, "voice.speaker")]
    assert "'nobody'" in errors[0]["message"] and "voices.sqlite" in errors[0]["message"]

    prepare(config(corpus, tmp_path / "pt", [data], voices=str(root / "spk2embeds.pt")))
    first = read_jsonl(tmp_path / "pt/voices.prepared.jsonl")[0]
    np.testing.assert_array_equal(np.load(tmp_path / "pt" / first["voice"]), corpus["presets"]["tian"])


def test_without_speaker_encoder(corpus, tmp_path):
    """No speaker encoder: no CAM++ vectors, no default voice; table voices still work and
    a voice clip is an error of its line."""
    from qinyu.data.prepare import prepare

    root = corpus["root"]
    data = write_jsonl(root / "noenc.jsonl", [
        chat(None, "Hi.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"]),
        chat(None, "Hi.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"], voice={"speaker": "yun"}),
        chat(None, "Hi.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"], voice={"clip": "wavs/clip.wav"}),
    ])
    report = prepare(config(corpus, tmp_path / "out", [data], speaker_encoder=None,
                            voices=str(root / "spk2embeds.pt")))
    lines = read_jsonl(tmp_path / "out/noenc.prepared.jsonl")
    assert report.prepared == 2 and lines[0]["audio"][0]["speaker"] is None and lines[0]["voice"] is None
    np.testing.assert_array_equal(np.load(tmp_path / "out" / lines[1]["voice"]), corpus["presets"]["yun"])
    assert not list((tmp_path / "out/cache/speaker").iterdir())
    assert [(p.line, p.field) for _, p in report.problems] == [(3, "voice.clip")]


def test_identical_audio_once_and_rerun_computes_nothing(corpus, tmp_path):
    from qinyu.data.prepare import prepare

    root = corpus["root"]
    (root / "wavs/a0_copy.wav").write_bytes((root / "wavs/a0.wav").read_bytes())
    data = write_jsonl(root / "dupes.jsonl", [
        chat("Say it.", "<|audio|>", ["wavs/a0.wav"]),
        chat("Say it again.", "<|audio|>", ["wavs/a0_copy.wav"]),  # same bytes, other name
        chat("And again.", "<|audio|>", ["wavs/a0.wav"]),
        chat(None, "Okay.<|audio|>", ["wavs/q0.wav", "wavs/a1.wav"]),
    ])
    cfg = config(corpus, tmp_path / "out", [data])
    first = prepare(cfg)
    out = tmp_path / "out"
    lines = read_jsonl(out / "dupes.prepared.jsonl")
    assert lines[0]["audio"] == [{**lines[1]["audio"][0], "source": "wavs/a0.wav"}] == lines[2]["audio"]
    assert first.computed == 3 and first.cached == 0  # a0 (three times), q0, a1
    assert len(list((out / "cache/codes").glob("*.npy"))) == 2
    assert len(list((out / "cache/features").glob("*.npy"))) == 1
    assert len(list((out / "cache/speaker").glob("*.npy"))) == 3

    before, text = cache_files(out), (out / "dupes.prepared.jsonl").read_text()
    time.sleep(0.01)
    again = prepare(cfg)
    assert again.computed == 0 and again.cached == 3 and again.prepared == 4
    assert cache_files(out) == before  # nothing rewritten
    assert (out / "dupes.prepared.jsonl").read_text() == text


def test_bf16_speaker_vectors_are_cached_apart_and_close_to_fp32(corpus, tmp_path):
    from qinyu.data.prepare import prepare

    data = write_jsonl(corpus["root"] / "one.jsonl", [chat(None, "Okay.<|audio|>", ["wavs/q0.wav", "wavs/a1.wav"])])
    out = tmp_path / "out"
    prepare(config(corpus, out, [data]))
    fp32 = {p.name: np.load(p) for p in (out / "cache/speaker").glob("*.npy")}
    again = prepare(config(corpus, out, [data], speaker_dtype="bf16"))
    assert again.computed == 2 and again.cached == 0  # both audios need a bf16 vector: other cache keys
    bf16 = {p.name: np.load(p) for p in (out / "cache/speaker").glob("*.npy") if p.name not in fp32}
    assert len(fp32) == len(bf16) == 2
    for a in fp32.values():  # each fp32 vector has its bf16 twin
        cosine = max(float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for b in bf16.values())
        assert cosine > 0.99


def test_bad_items_are_skipped_and_listed(corpus, tmp_path, capsys):
    from qinyu.data.prepare import main_prepare

    root = corpus["root"]
    (root / "wavs/garbage.wav").write_bytes(b"RIFF not really a wave file" * 10)
    sf.write(str(root / "wavs/nan.wav"), np.full(8000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    sf.write(str(root / "wavs/tiny.wav"), np.zeros(100, dtype=np.float32), 16000)
    rows = [
        {"id": "good-1", **chat(None, "Fine.<|audio|>", ["wavs/q0.wav", "wavs/a0.wav"])},  # 1
        chat(None, "Fine.", ["wavs/missing.wav"]),                                         # 2 missing file
        chat(None, "Fine.", ["wavs/garbage.wav"]),                                         # 3 unreadable
        '{"messages": [{"role": "user", "content": "<|audio|>"',                           # 4 not JSON
        {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "Hi."}]},  # 5
        chat("<|audio|> and <|audio|>", "Fine.", ["wavs/q1.wav"]),                          # 6 too many tags
        chat("Hello.", "  ", []),                                                           # 7 empty turn
        chat(None, "Fine.<|audio|>", ["wavs/q0.wav", "wavs/a1.wav"], voice={"speaker": "nobody"}),  # 8
        chat(None, "Fine.", ["wavs/nan.wav"]),                                              # 9 NaN samples
        chat(None, "Fine.", ["wavs/tiny.wav"]),                                             # 10 6 ms of audio
        {"id": "good-2", **chat("Say it.", "<|audio|>", ["wavs/a1.wav"])},                  # 11
    ]
    data = write_jsonl(root / "bad.jsonl", rows)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(
        config(corpus, tmp_path / "out", [data], voices=str(root / "spk2embeds.pt"))))

    assert main_prepare(str(tmp_path / "bad.yaml")) == 1
    printed = capsys.readouterr().out
    assert "prepared 2 of 11 sample(s)" in printed and "9 skipped" in printed
    out = tmp_path / "out"
    assert [x["id"] for x in read_jsonl(out / "bad.prepared.jsonl")] == ["good-1", "good-2"]
    errors = read_jsonl(out / "bad.errors.jsonl")
    assert all(set(e) == {"file", "line", "field", "message"} and e["file"] == str(data) for e in errors)
    where = {(e["line"], e["field"]) for e in errors}
    assert where == {(2, "audios[0]"), (3, "audios[0]"), (4, "(line)"), (5, "messages[0].role"), (6, "audios"),
                     (7, "messages[1].content"), (8, "voice.speaker"), (9, "audios[0]"), (10, "audios[0]")}
    message = {e["line"]: e["message"] for e in errors}
    assert "missing.wav" in message[2] and "garbage.wav" in message[3] and "not valid JSON" in message[4]
    assert "'robot'" in message[5] and "1 file(s) for 2" in message[6] and "empty assistant turn" in message[7]
    assert "'nobody'" in message[8] and "nan.wav" in message[9] and "NaN" in message[9]
    assert "tiny.wav" in message[10]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["samples"], manifest["prepared"], manifest["skipped"]) == (11, 2, 9)


def test_two_workers_give_the_same_output_as_one(corpus, tmp_path):
    from qinyu.data.prepare import prepare

    data = write_jsonl(corpus["root"] / "workers.jsonl",
                       [chat(None, f"Reply {i}.<|audio|>", [f"wavs/q{i}.wav", f"wavs/a{i}.wav"]) for i in range(4)])
    one = prepare(config(corpus, tmp_path / "one", [data], workers=1))
    two = prepare(config(corpus, tmp_path / "two", [data], workers=2))
    assert one.prepared == two.prepared == 4 and one.computed == two.computed == 8
    same_output(tmp_path / "one", tmp_path / "two", "workers")


def test_killed_run_resumes_without_redoing_finished_items(corpus, tmp_path):
    """SIGKILL a `main_prepare` subprocess after a few cache entries, leave a half-written
    temporary file, resume: finished entries are kept as they are, only the rest is
    computed, and the output equals an uninterrupted run's."""
    from qinyu.data.prepare import prepare

    root = corpus["root"]
    for i in range(8):  # 16 distinct audio files: a few seconds of work for one worker
        say(root / f"long/q{i}.wav", SENTENCES[i], voice="en-us+m1", pitch=30 + 5 * i)
        say(root / f"long/a{i}.wav", SENTENCES[-1 - i], voice="en-us+f2", pitch=50 + 5 * i)
    data = write_jsonl(root / "long.jsonl",
                       [chat(None, f"Reply {i}.<|audio|>", [f"long/q{i}.wav", f"long/a{i}.wav"]) for i in range(8)])
    out = tmp_path / "killed"
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(config(corpus, out, [data])))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from qinyu.data.prepare import main_prepare; "
                             f"sys.exit(main_prepare({str(tmp_path / 'long.yaml')!r}))"],
                            cwd=str(REPO), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while len(cache_files(out) if (out / "cache").is_dir() else {}) < 3:
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the parent and its pool workers
        proc.wait()
    assert not (out / "long.prepared.jsonl").exists()  # killed mid-run
    done = cache_files(out)
    assert 3 <= len(done) < 8 * 3  # 8 x (codes, speaker) + 8 x (features, speaker)
    (out / "cache/codes/deadbeef.npy.tmp-999").write_bytes(b"\x93NUMPY half")  # a half-written entry

    time.sleep(0.01)
    resumed = prepare(tmp_path / "long.yaml")
    assert resumed.prepared == 8 and 0 < resumed.computed < 16
    after = cache_files(out)
    assert {k: after[k] for k in done} == done  # finished entries were not redone
    assert not list(out.rglob("*.tmp-*"))

    prepare(config(corpus, tmp_path / "whole", [data], workers=2))
    same_output(out, tmp_path / "whole", "long")


def test_bad_config_exits_2(corpus, tmp_path, capsys):
    from qinyu.data.prepare import ConfigError, main_prepare, prepare

    root = corpus["root"]
    data = write_jsonl(root / "tiny.jsonl", [chat("Say it.", "<|audio|>", ["wavs/a0.wav"])])
    good = config(corpus, tmp_path / "out", [data])
    cases = {
        "unknown key(s) ['worker']": {**good, "worker": 2},
        "'codec' is required": {k: v for k, v in good.items() if k != "codec"},
        "'inputs[0]': data file not found": {**good, "inputs": [str(root / "nope.jsonl")]},
        "'workers' must be a positive integer": {**good, "workers": 0},
        "'speaker_dtype' must be fp32 or bf16, got 'fp16'": {**good, "speaker_dtype": "fp16"},
        "'speaker_encoder': not found": {**good, "speaker_encoder": str(root / "nope")},
        "codec.json is missing": {**good, "codec": str(root / "wavs")},
    }
    for i, (message, cfg) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main_prepare(str(path)) == 2, message
        assert message in capsys.readouterr().err
    assert main_prepare(str(tmp_path / "missing.yaml")) == 2
    with pytest.raises(ConfigError, match="'output' is required"):
        prepare({k: v for k, v in good.items() if k != "output"})
    assert not (tmp_path / "out").exists()
