import multiprocessing as mp

import numpy as np
import pytest
import torch

from qinyu.voice.library import VoiceError, VoiceLibrary


def vec(seed):
    return np.random.default_rng(seed).normal(0, 1, 192).astype(np.float32)


def test_create_list_get_delete(tmp_path):
    lib = VoiceLibrary(tmp_path / "voices.sqlite")
    a = lib.add("tian", vec(0))
    b = lib.add("narrator", vec(1), detail="from a file")
    assert a.id.startswith("v_") and a.id != b.id
    assert [v.name for v in lib.list()] == ["narrator", "tian"]
    again = VoiceLibrary(tmp_path / "voices.sqlite").get("tian")  # persisted, same id
    assert again.id == a.id and np.array_equal(again.vector, vec(0))
    assert lib.get(b.id).name == "narrator"
    lib.delete("tian")
    with pytest.raises(VoiceError, match="no voice named 'tian'"):
        lib.get("tian")


def test_bad_voices(tmp_path):
    lib = VoiceLibrary(tmp_path / "v.sqlite")
    lib.add("x", vec(0))
    with pytest.raises(VoiceError, match="already exists"):
        lib.add("x", vec(1))
    assert np.array_equal(lib.add("x", vec(1), replace=True).vector, vec(1))
    with pytest.raises(VoiceError, match="192 values, got 10"):
        lib.add("y", np.zeros(10))
    with pytest.raises(VoiceError, match="NaN"):
        lib.add("y", np.full(192, np.nan))
    with pytest.raises(VoiceError, match="non-empty"):
        lib.add("  ", vec(2))
    (tmp_path / "junk.sqlite").write_text("not a database at all, just text" * 10)
    with pytest.raises(VoiceError, match="cannot open voice library"):
        VoiceLibrary(tmp_path / "junk.sqlite")


def test_import_reference_presets(tmp_path):
    torch.save({"tian": torch.from_numpy(vec(0)), "2619-王承恩": torch.from_numpy(vec(1))}, tmp_path / "spk.pt")
    lib = VoiceLibrary(tmp_path / "v.sqlite")
    names = sorted(v.name for v in lib.import_presets(tmp_path / "spk.pt"))
    assert names == ["2619-王承恩", "tian"] and lib.get("tian").source == "preset"
    (tmp_path / "bad.pt").write_text("nope")
    with pytest.raises(VoiceError, match="cannot read preset voices"):
        lib.import_presets(tmp_path / "bad.pt")


def _writer(path, start):
    lib = VoiceLibrary(path)
    for i in range(start, start + 20):
        lib.add(f"voice-{i}", np.full(192, i, dtype=np.float32))


def test_concurrent_writers(tmp_path):
    path = tmp_path / "v.sqlite"
    VoiceLibrary(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, k * 20)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    voices = VoiceLibrary(path).list()
    assert len(voices) == 80 and len({v.id for v in voices}) == 80
    assert all(float(v.vector[0]) == int(v.name.split("-")[1]) for v in voices)


def test_cli_voice_commands(tmp_path, capsys):
    from qinyu.cli import main

    lib = ["voice", "--library", str(tmp_path / "v.sqlite")]
    np.save(tmp_path / "v.npy", vec(3))
    torch.save(torch.from_numpy(vec(4)), tmp_path / "ref_speaker.pt")  # the reference's *_speaker.pt format
    assert main(lib + ["create", "--name", "a", "--vector", str(tmp_path / "v.npy")]) == 0
    assert main(lib + ["create", "--name", "b", "--vector", str(tmp_path / "ref_speaker.pt")]) == 0
    assert main(lib + ["list", "--json"]) == 0
    out = capsys.readouterr().out
    listed = __import__("json").loads(out[out.index("["):])
    assert [v["name"] for v in listed] == ["a", "b"]
    assert main(lib + ["delete", "a"]) == 0
    assert main(lib + ["delete", "a"]) == 2
    assert "no voice named 'a'" in capsys.readouterr().err
    assert main(lib + ["create", "--name", "c", "--vector", str(tmp_path / "missing.npy")]) == 2
    with pytest.raises(SystemExit, match="needs --timbre"):
        main(lib + ["create", "--name", "d", "--description", "a calm old man"])


def test_cli_create_from_description(tmp_path, capsys):
    """Offline: the packaged text encoder and a (tiny, freshly fitted) text-to-timbre model."""
    from qinyu.cli import main
    from qinyu.voice.timbre import TimbreConfig, train_timbre

    pairs = [("a calm old man", vec(5)), ("a cheerful young girl", vec(6))]
    model = train_timbre(pairs, TimbreConfig(hidden=32, filter_channels=32, blocks=1), steps=5)
    model.save(tmp_path / "timbre")
    lib = ["voice", "--library", str(tmp_path / "v.sqlite")]
    assert main(lib + ["create", "--name", "elder", "--description", "a calm old man",
                       "--timbre", str(tmp_path / "timbre")]) == 0
    voice = VoiceLibrary(tmp_path / "v.sqlite").get("elder")
    assert voice.source == "description" and voice.detail == "a calm old man" and voice.vector.shape == (192,)


def test_cli_create_from_clip(tmp_path):
    from qinyu.audio.espeak import espeak
    from qinyu.audio.io import save_audio
    from qinyu.cli import main
    from qinyu.voice.campplus import CAMPPlus, SpeakerEncoder

    torch.manual_seed(0)
    SpeakerEncoder(CAMPPlus(growth_rate=8, bn_size=2, init_channels=32, block_layers=(1, 1, 1))).save(tmp_path / "enc")
    save_audio(tmp_path / "clip.wav", *espeak("a short reference clip", voice="en-us+f3"))
    lib = ["voice", "--library", str(tmp_path / "v.sqlite")]
    assert main(lib + ["create", "--name", "ref", "--clip", str(tmp_path / "clip.wav"),
                       "--speaker-encoder", str(tmp_path / "enc")]) == 0
    voice = VoiceLibrary(tmp_path / "v.sqlite").get("ref")
    assert voice.source == "clip" and np.isfinite(voice.vector).all()
    assert main(lib + ["create", "--name", "bad", "--clip", str(tmp_path / "missing.wav"),
                       "--speaker-encoder", str(tmp_path / "enc")]) == 2
