"""``qinyu eval nano``: answer matching, the metric plumbing on inputs with known answers,
and the whole evaluation on a tiny random checkpoint."""

import json

import numpy as np
import pytest

from qinyu.cli import main
from qinyu.nano import evaluate as ne
from qinyu.nano.corpus import read_jsonl

TINY = 0.02


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from qinyu.nano.corpus import build_corpus

    out = tmp_path_factory.mktemp("nano-eval") / "corpus"
    assert build_corpus(out, scale=TINY, progress=False).ok
    return out


@pytest.fixture(scope="module")
def speaking_checkpoint(tmp_path_factory):
    """The tiny random model with a (quickly fitted) nano codec, so it can speak, and a tiny
    random CAM++ speaker encoder (the recipe of tests/server/conftest.py, plus the encoder)."""
    import torch

    from qinyu.audio.espeak import espeak
    from qinyu.codec import NanoCodec
    from qinyu.model import new_checkpoint
    from qinyu.voice.campplus import CAMPPlus, CAMPPlusConfig, SpeakerEncoder

    root = tmp_path_factory.mktemp("speaking")
    ck = new_checkpoint(root / "tiny")
    NanoCodec.fit([espeak("one two three four", voice="en-us")], iterations=2).save(ck / "codec")
    torch.manual_seed(0)
    config = CAMPPlusConfig(growth_rate=8, bn_size=2, init_channels=32, block_layers=(2, 2, 2), head_channels=8)
    SpeakerEncoder(CAMPPlus.from_config(config)).save(ck / "spk")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["codec"] = {"type": "nano", "path": "codec"}
    cfg["speaker_encoder"] = "spk"
    (ck / "config.json").write_text(json.dumps(cfg))
    return ck


# -- answers -----------------------------------------------------------------------------
@pytest.mark.parametrize("reply,number,ok", [
    ("Three plus four is seven.", 7, True),
    ("Three plus four is 7.", 7, True),
    ("3 + 4 = 7", 7, True),
    ("Well, then it's twenty-three.", 23, True),
    ("Then it is twenty three", 23, True),
    ("Then it is twenty three", 20, False),
    ("Three plus zero is four.", 3, False),  # the operand said first does not count: the last number does
    ("Seven plus one is 8, not seven", 8, False),
    ("I don't know.", 0, False),
    ("Ten minus ten is zero.", 0, True),
    ("", 5, False),
])
def test_arithmetic_answers_accept_digits_and_words(reply, number, ok):
    assert ne.answer_correct(reply, {"number": number, "answer": "x"}) is ok


def test_fact_answers_need_the_whole_words():
    ref = {"answer": "paris", "accept": ["paris"]}
    assert ne.answer_correct("The capital of France is Paris.", ref)
    assert not ne.answer_correct("The capital of France is Parisian.", ref)
    assert not ne.answer_correct("The capital of France is Rome.", ref)
    assert ne.answer_correct("Good night, sleep-well!", {"answer": "sleep well", "accept": ["sleep well"]})
    assert not ne.answer_correct("Sleep. Well.", {"answer": "good night", "accept": ["good night"]})
    assert ne.numbers_in("twenty-one 4 nineteen ninety nine") == [21, 4, 19, 99]


# -- metric plumbing with known answers ----------------------------------------------------
def _sing(notes, sr=16000, semitones=0.0):
    """A sine (with a few harmonics) that follows the notes exactly."""
    from qinyu.data.synth.svs import midi_to_hz

    end = max(n[1] + n[2] for n in notes)
    t = np.arange(int(end * sr)) / sr
    f = np.zeros_like(t)
    for pitch, start, dur, _ in notes:
        f[(t >= start) & (t < start + dur)] = midi_to_hz(pitch + semitones)
    phase = 2 * np.pi * np.cumsum(f) / sr
    wav = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * 0.3 * (f > 0)
    return wav.astype(np.float32), sr


NOTES = [[60, 0.0, 0.4, "a"], [64, 0.4, 0.4, "b"], [67, 0.8, 0.4, "c"], [72, 1.2, 0.6, "d"]]


def test_pitch_rows_score_a_perfect_and_a_wrong_rendition():
    assert ne.target_contour(NOTES).shape == (180,)
    right = ne.pitch_rows([("a", _sing(NOTES), NOTES)], "")
    values = {r.key: r.value for r in right}
    assert values["note_accuracy"] > 95 and values["contour_mse"] < 0.05 and values["contour_dtw"] < 0.1
    wrong = {r.key: r.value for r in ne.pitch_rows([("a", _sing(NOTES, semitones=3), NOTES)], "")}
    assert wrong["note_accuracy"] < 5  # every note 3 semitones off; the normalised contour is the same shape
    silent = ne.pitch_rows([("a", (np.zeros(16000, np.float32), 16000), NOTES), ("b", ValueError("boom"), NOTES)],
                           "")
    assert all(r.value is None and r.failed == 2 and "every item failed" in r.reason for r in silent)
    assert all("no speaker" not in r.reason for r in silent)


def test_forced_choice_picks_the_spoken_sentence():
    from qinyu.audio.espeak import espeak

    chooser, missing = ne.load_forced_choice()
    if chooser is None:
        pytest.skip(missing)
    pool = ["Three plus four is seven.", "A cow says moo.", "The capital of Japan is Tokyo.", "Snow is white."]
    cases = [(f"i{k}", espeak(text, voice="en-us+f2"), text) for k, text in enumerate(pool)]
    cases.append(("oov", espeak("My name is Qinyu.", voice="en-us+f2"), "My name is Qinyu."))
    row = ne.forced_choice_row("fc", "fc", cases, chooser, pool + ["My name is Qinyu."])
    assert row.value == 100.0 and row.n == 4 and row.failed == 1
    none = ne.forced_choice_row("fc", "fc", cases, None, pool, reason="pocketsphinx is not installed")
    assert none.value is None and none.cell() == "not computed: pocketsphinx is not installed"


def test_voice_rows_and_cer_rows_on_known_inputs():
    targets = {v: np.eye(192)[k] for k, v in enumerate(["captain", "mira", "rose"])}

    def embed(wav, sr):  # the "speaker" is written in the first sample
        return targets[["captain", "mira", "rose"][int(wav[0])]] + 0.1

    audio = lambda k: (np.full(1600, float(k), np.float32), 16000)  # noqa: E731
    sim, nearest = ne.voice_rows([("a", audio(0), "captain"), ("b", audio(1), "mira"), ("c", audio(2), "captain")],
                                 embed, targets, "voice_")
    assert nearest.value == pytest.approx(200 / 3) and nearest.n == 3
    assert sim.n == 3 and 0 < sim.value < 1
    missing = ne.voice_rows([("a", audio(0), "captain")], embed, targets, "voice_", reason="no speaker encoder")
    assert all(r.cell() == "not computed: no speaker encoder" for r in missing)
    cer = ne.cer_row("c", "c", [("three plus four", "three plus four"), ("seven", ValueError("x"))], "m")
    assert cer.value == 0.0 and cer.n == 1 and cer.failed == 1
    assert ne.cer_row("c", "c", [("seven", "seveb")], "m").value == pytest.approx(20.0)


# -- the whole evaluation ----------------------------------------------------------------
def _cells(md: str) -> list[str]:
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| metric")]
    return [line.split(" | ")[1] for line in rows]


def test_evaluate_nano_end_to_end(speaking_checkpoint, tiny_corpus, tmp_path, capsys):
    from qinyu.train.trainer import FIELDS

    stage = speaking_checkpoint / "stage2"  # a training run's metrics beside the checkpoint: loss curves
    stage.mkdir(exist_ok=True)
    (stage / "metrics.csv").write_text(",".join(FIELDS) + "\n" + "".join(
        f"{k},{3 / k},{2 / k},{1 / k},0.001,100,50,{k}\n" for k in range(1, 5)))
    report_path = tmp_path / "out" / "report.md"
    assert main(["eval", "nano", "--model", str(speaking_checkpoint), "--corpus", str(tiny_corpus), "--report",
                 str(report_path), "--max-steps", "16", "--quiet"]) == 0
    md = report_path.read_text()
    assert md in capsys.readouterr().out
    report = json.loads(report_path.with_suffix(".json").read_text())
    meta = read_jsonl(tiny_corpus / "heldout_meta.jsonl")
    assert report["items"] == {k: sum(m["kind"] == k for m in meta) for k in ne.KINDS}
    keys = {r["key"] for r in report["rows"]}
    for key in ("qa_accuracy", "asr_cer", "intelligibility_fc", "gt_intelligibility_fc", "intelligibility_cer",
                "gt_intelligibility_cer", "voice_similarity", "voice_nearest_voice", "gt_voice_similarity",
                "gt_voice_nearest_voice", "contour_mse", "contour_dtw", "note_accuracy", "gt_contour_mse",
                "gt_note_accuracy"):
        assert key in keys
    for row in report["rows"]:
        assert (row["value"] is None) == bool(row["reason"]), row
        assert row["value"] is None or np.isfinite(row["value"])
    cells = _cells(md)
    assert len(cells) == len(report["rows"])
    for cell in cells:
        assert cell.startswith("not computed: ") or float(cell.rstrip(" %")) >= 0, cell
    by_key = {r["key"]: r for r in report["rows"]}
    assert by_key["qa_accuracy"]["n"] + by_key["qa_accuracy"]["failed"] == report["items"]["qa"]
    assert by_key["gt_note_accuracy"]["value"] > 50  # the codec keeps the pitch of the reference singing
    for png in ("pitch.png", "loss.png"):
        assert (report_path.parent / "report_files" / png).is_file()
        assert f"(report_files/{png})" in md
    assert "## Targets" in md and "## Methods" in md
    items = read_jsonl(report_path.parent / "report_files" / "items.jsonl")
    assert len(items) == sum(report["items"].values())


def test_the_ground_truth_as_generated_gives_the_upper_bounds(speaking_checkpoint, tiny_corpus):
    nm = ne.NanoModel(speaking_checkpoint, tiny_corpus, max_steps=16)
    items = ne.load_heldout(tiny_corpus)
    outputs = {}
    for it in items:
        ref = it.reference
        text = {"qa": ref.get("reply"), "asr": ref.get("text"), "roleplay": ref.get("text"),
                "singing": ref.get("lyrics")}[it.kind]
        wav, sr = nm.reconstruct(tiny_corpus / it.sample["audios"][-1])
        outputs[it.id] = ne.Output(text, wav, sr)
    rows, _ = ne.score_all(items, outputs, nm, tiny_corpus)
    by_key = {r.key: r for r in rows}
    assert by_key["qa_accuracy"].value == 100.0 and by_key["asr_cer"].value == 0.0
    for key in ("intelligibility_fc", "intelligibility_cer", "voice_similarity", "voice_nearest_voice",
                "contour_mse", "contour_dtw", "note_accuracy"):
        gen, ub = by_key[key], by_key[f"gt_{key}"]
        assert (gen.value, gen.n, gen.failed) == (ub.value, ub.n, ub.failed), key
        assert ub.upper_bound and not gen.upper_bound


def test_without_codec_or_speaker_encoder_speech_metrics_are_not_computed(tiny_corpus, tmp_path, monkeypatch):
    from qinyu.model import new_checkpoint

    ck = new_checkpoint(tmp_path / "mute")
    report = ne.evaluate_nano(ck, tiny_corpus, tmp_path / "r.md", limit=1, max_steps=8, progress=False)
    by_key = {r["key"]: r for r in report["rows"]}
    assert by_key["qa_accuracy"]["value"] is not None and by_key["asr_cer"]["value"] is not None
    for key in ("intelligibility_fc", "gt_intelligibility_cer", "voice_nearest_voice", "note_accuracy"):
        assert by_key[key]["value"] is None and "no codec" in by_key[key]["reason"]
    md = (tmp_path / "r.md").read_text()
    assert "not computed: the checkpoint names no codec" in md
    assert "not measured" in md  # the targets that need speech


def test_missing_pocketsphinx_is_reported(speaking_checkpoint, tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(ne, "load_forced_choice", lambda: (None, "pocketsphinx is not installed (pip install "
                                                                  "'qinyu[bench]')"))
    speaker = tmp_path / "nospk"
    import shutil

    shutil.copytree(speaking_checkpoint, speaker)
    cfg = json.loads((speaker / "config.json").read_text())
    cfg["speaker_encoder"] = None
    (speaker / "config.json").write_text(json.dumps(cfg))
    report = ne.evaluate_nano(speaker, tiny_corpus, tmp_path / "r.md", limit=1, max_steps=8, progress=False)
    by_key = {r["key"]: r for r in report["rows"]}
    assert by_key["intelligibility_fc"]["reason"].startswith("pocketsphinx is not installed")
    assert "speaker encoder" in by_key["voice_similarity"]["reason"]
    assert by_key["gt_note_accuracy"]["value"] is not None


def test_bad_corpus_is_a_clear_error(speaking_checkpoint, tmp_path, capsys):
    assert main(["eval", "nano", "--model", str(speaking_checkpoint), "--corpus", str(tmp_path / "none"),
                 "--report", str(tmp_path / "r.md")]) == 2
    assert "qinyu data nano-corpus" in capsys.readouterr().err
