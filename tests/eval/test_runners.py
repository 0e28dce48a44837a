"""End to end: each benchmark runner on a small fixture laid out like the published data
(made here: a few items, espeak-ng speech), the tiny speaking model and a local
OpenAI-protocol judge (tests/eval/judge_server.py). Replies are generated and saved,
scored, resumed without regenerating finished items, and reported; bad input (missing
audio, malformed lines, judge down, unparsable judge answers) is counted as failed.

The tiny model is random: its replies and transcripts are garbage, but they are real
model outputs, so every number is checked against the per-item records it came from.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from qinyu.cli import main as qinyu_main

from .judge_server import JudgeServer, closed_port_url

MAX_STEPS = "16"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny random checkpoint with a quickly fitted nano codec, so it can speak."""
    from qinyu.demo import speaking_checkpoint

    return speaking_checkpoint(tmp_path_factory.mktemp("eval-model") / "tiny")


@pytest.fixture(scope="module")
def speech():
    """write(path, text): an espeak-ng utterance as a wav file (22.05 kHz)."""
    import soundfile as sf

    from qinyu.audio.espeak import espeak

    cache = {}

    def write(path: Path, text: str = "what is two plus five", voice: str = "en-us") -> Path:
        if (text, voice) not in cache:
            cache[text, voice] = espeak(text, voice=voice)
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), *cache[text, voice])
        return path

    return write


@pytest.fixture
def judge():
    with JudgeServer() as server:
        yield server


def run_cli(*args) -> int:
    return qinyu_main(["eval", "run", *args, "--max-steps", MAX_STEPS, "--quiet"])


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def row(rep: dict, metric: str, subset=None) -> dict:
    found = [r for r in rep["scores"] if r["metric"] == metric and (subset is None or r["subset"] == subset)]
    assert len(found) == 1, (metric, subset, [r["metric"] for r in rep["scores"]])
    return found[0]


def items(out: Path) -> dict:
    return {i["key"]: i for i in map(json.loads, (out / "items.jsonl").read_text().splitlines())}


def test_an_audio_file_becomes_one_user_turn_however_often_it_is_given(tiny, speech, tmp_path, monkeypatch):
    """Later items repeat earlier utterances in their histories: the file's features and
    voice vector are made once, each caller gets a turn of its own, and a changed file or
    another prompt makes a new one."""
    from qinyu.eval.runners.base import SpeechModel

    model = SpeechModel(tiny, max_steps=4)
    wav = speech(tmp_path / "q.wav")
    first = model.audio_turn(model.session(), wav)
    again = model.audio_turn(model.session(), wav)
    assert again is not first and again.features is first.features and again.speaker is first.speaker
    prompted = model.audio_turn(model.session(), wav, prompt="Convert the speech to text.\n<|audio|>")
    assert prompted.text != first.text
    speech(wav, "the quick brown fox jumps over the lazy dog")  # the file changes
    changed = model.audio_turn(model.session(), wav)
    assert changed.features is not first.features and len(changed.features) != len(first.features)
    # only the most recently used AUDIO_TURN_CACHE turns are kept
    monkeypatch.setattr("qinyu.eval.runners.base.AUDIO_TURN_CACHE", 2)
    a, b, c = (speech(tmp_path / f"other-{k}.wav", f"number {k}") for k in range(3))
    turn_a = model.audio_turn(model.session(), a)
    model.audio_turn(model.session(), b)
    assert model.audio_turn(model.session(), a).features is turn_a.features  # a used again: b is the oldest
    model.audio_turn(model.session(), c)  # b goes
    assert model.audio_turn(model.session(), a).features is turn_a.features
    assert len(model._audio_turns) == 2


# --------------------------------------------------------------------------------------
# ASR
# --------------------------------------------------------------------------------------
def test_asr_kaldi_end_to_end_resume_and_bad_entries(tiny, speech, tmp_path):
    data = tmp_path / "test_clean"
    for i, text in enumerate(["hello world", "one two three", "good morning", "see you"]):
        speech(data / f"u{i}.wav", text)
    (data / "wav.scp").write_text("u0 u0.wav\nu1 u1.wav\nu2 u2.wav\nu3 u3.wav\n"
                                  "u4 missing.wav\nu5 sox in.flac -t wav - |\nbroken\n")
    (data / "text").write_text("u0 hello world\nu1 one two three\nu2 good morning\nu3 see you\n"
                               "u4 nothing here\nu5 a pipe\nu6 no audio for me\n")
    out = tmp_path / "out"
    # an "interrupted" run: only the first two items
    assert run_cli("asr", "--model", str(tiny), "--data", str(data), "--out", str(out), "--limit", "2",
                   "--batch", "2") == 0
    first = report(out)
    assert (first["generated"], first["reused"]) == (2, 0)
    stamps = {k: (out / "items" / f"{k}.json").stat().st_mtime_ns for k in ("u0", "u1")}

    assert run_cli("asr", "--model", str(tiny), "--data", str(data), "--out", str(out), "--batch", "3") == 0
    rep = report(out)
    assert (rep["generated"], rep["reused"]) == (2, 2)  # u2, u3 new; u0, u1 not generated again
    assert {k: (out / "items" / f"{k}.json").stat().st_mtime_ns for k in stamps} == stamps

    per_item = items(out)
    assert len(per_item) == 8  # nothing dropped: 4 good, missing wav, pipe, malformed line, text without audio
    failed = {k: v["reason"] for k, v in per_item.items() if v["status"] != "ok"}
    assert set(failed) == {"u4", "u5", "wav.scp:7", "u6"}
    assert "audio file not found" in failed["u4"] and "pipe command" in failed["u5"]
    assert "expected 'UTT PATH'" in failed["wav.scp:7"] and "no audio in wav.scp" in failed["u6"]

    wer = row(rep, "WER (%)")
    assert (wer["n"], wer["failed"], wer["normaliser"]) == (4, 4, "wenet v1")
    assert wer["aggregation"].startswith("corpus")
    # the number is the corpus WER of the saved hypotheses
    from qinyu.eval.metrics.wer import error_rate

    ok = [v for v in per_item.values() if v["status"] == "ok"]
    expected = error_rate([v["ref"] for v in ok], [v["hyp"] for v in ok], "wenet", "corpus").value * 100
    assert wer["value"] == pytest.approx(expected, abs=1e-3)
    hyp_lines = (out / "hyp.txt").read_text().splitlines()
    assert [line.split(" ")[0] for line in hyp_lines] == ["u0", "u1", "u2", "u3"]
    md = (out / "report.md").read_text()
    assert "| WER (%) |" in md and "wenet v1" in md and "## Failed items (4)" in md and "`u5`" in md


def test_asr_manifest_with_malformed_lines(tiny, speech, tmp_path):
    speech(tmp_path / "audio" / "a.wav", "good morning")
    manifest = tmp_path / "test.jsonl"
    manifest.write_text("\n".join([
        json.dumps({"id": "a", "audio": "audio/a.wav", "text": "good morning"}),
        "{this is not json",
        json.dumps({"id": "b", "audio": "audio/a.wav"}),  # no "text"
        json.dumps({"id": "c", "audio": "audio/nowhere.wav", "text": "x"}),
    ]) + "\n")
    out = tmp_path / "out"
    assert run_cli("asr", "--model", str(tiny), "--data", str(manifest), "--out", str(out),
                   "--normaliser", "seedtts-en") == 0
    rep = report(out)
    wer = row(rep, "WER (%)")
    assert (wer["n"], wer["failed"], wer["normaliser"]) == (1, 3, "seedtts-en v1")
    assert wer["aggregation"] == "mean of per-utterance rates"
    reasons = {k: v["reason"] for k, v in items(out).items() if v["status"] != "ok"}
    assert "malformed JSON" in reasons["line2"] and "text" in reasons["b"] and "not found" in reasons["c"]


# --------------------------------------------------------------------------------------
# Seed-TTS
# --------------------------------------------------------------------------------------
def make_seedtts(root: Path, speech) -> Path:
    speech(root / "en" / "prompt-wavs" / "p0.wav", "this is the prompt")
    (root / "en" / "meta.lst").write_text(
        "utt0|this is the prompt|prompt-wavs/p0.wav|hello there\n"
        "utt1|this is the prompt|prompt-wavs/p0.wav|good night|wavs/utt1.wav\n"
        "only|three|fields\n"
        "utt3|this is the prompt|prompt-wavs/gone.wav|what\n")
    speech(root / "zh" / "prompt-wavs" / "z0.wav", "ni hao", voice="cmn")
    (root / "zh" / "meta.lst").write_text("z0|你好|prompt-wavs/z0.wav|今天天气很好\n")
    return root


def test_seedtts_end_to_end(tiny, speech, tmp_path):
    data = make_seedtts(tmp_path / "seedtts_testset", speech)
    out = tmp_path / "out"
    # no recogniser configured: stop before generating anything, naming the protocol's recogniser
    assert run_cli("seedtts", "--model", str(tiny), "--data", str(data), "--out", str(out)) == 2
    assert not (out / "items").exists()

    assert run_cli("seedtts", "--model", str(tiny), "--data", str(data), "--out", str(out), "--asr", "slm") == 0
    rep = report(out)
    import soundfile as sf

    from qinyu.codec import codec_for_checkpoint

    rate = codec_for_checkpoint(tiny).output_sample_rate
    for rel in ("en/utt0.wav", "en/utt1.wav", "zh/z0.wav"):
        assert sf.info(str(out / rel)).samplerate == rate
    en, zh = row(rep, "WER (%)", "en"), row(rep, "CER (%)", "zh")
    assert (en["n"], en["failed"], en["normaliser"]) == (2, 2, "seedtts-en v1")
    assert (zh["n"], zh["failed"], zh["normaliser"]) == (1, 0, "seedtts-zh v1")
    assert en["scorer"].startswith("slm") and "not the protocol" in en["scorer"]
    per_item = items(out)
    assert "got 3 field(s)" in per_item["en/line3"]["reason"]
    assert "prompt wav not found" in per_item["en/utt3"]["reason"]
    rates = [per_item[k]["rate"] for k in ("en/utt0", "en/utt1")]
    assert en["value"] == pytest.approx(100 * np.mean(rates), abs=1e-3)

    # a re-run reuses the audio and the cached transcripts
    stamp = (out / "en" / "utt0.wav").stat().st_mtime_ns
    assert run_cli("seedtts", "--model", str(tiny), "--data", str(data), "--out", str(out), "--asr", "slm") == 0
    assert report(out)["generated"] == 0 and (out / "en" / "utt0.wav").stat().st_mtime_ns == stamp
    assert report(out)["scores"] == rep["scores"]


def test_seedtts_speaker_prompt_through_the_checkpoint_speaker_encoder(tiny, speech, tmp_path):
    """A checkpoint with a speaker encoder clones the prompt wav's voice (its vector in the system line)."""
    import torch

    from qinyu.voice.campplus import CAMPPlus, CAMPPlusConfig, SpeakerEncoder

    ck = tmp_path / "tiny-spk"
    shutil.copytree(tiny, ck)
    torch.manual_seed(0)
    config = CAMPPlusConfig(growth_rate=8, bn_size=2, init_channels=32, block_layers=(2, 2, 2), head_channels=8)
    SpeakerEncoder(CAMPPlus.from_config(config)).save(ck / "spk")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["speaker_encoder"] = "spk"
    (ck / "config.json").write_text(json.dumps(cfg))
    data = make_seedtts(tmp_path / "seedtts_testset", speech)
    out = tmp_path / "out"
    assert run_cli("seedtts", "--model", str(ck), "--data", str(data), "--out", str(out), "--asr", "slm",
                   "--subset", "en", "--limit", "1") == 0
    from qinyu.eval.runners.base import ItemStore

    record = json.loads(ItemStore(out).path("en/utt0").read_text())
    assert record["speaker_prompt"] is True and (out / "en" / "utt0.wav").is_file()


# --------------------------------------------------------------------------------------
# C3
# --------------------------------------------------------------------------------------
C3_EN_REFS = {
    "ambiguity/phonological/generation.json": [{"content": "generation", "notation": "n"}],
    "ambiguity/phonological/heterograph.json": [{"content": "YES heterograph", "notation": "n", "problem": "p"}],
    "ambiguity/phonological/pause.json": [{"content": "pause", "notation": "n"}],
    "ambiguity/phonological/stress.json": [{"content": "YES stress", "notation": "n"}],
    "ambiguity/phonological/intonation.json": [{"content": "UNPARSABLE intonation", "notation": "n"}],
    "ambiguity/semantic/lexical.json": [{"content": "YES lexical", "notation": "n"}],
    "ambiguity/semantic/syntactic.json": [{"content": "syntactic", "notation": {"ambiguity": "a",
                                                                                 "interpretations": ["i1", "i2"]}}],
    "context-dependency/omission.json": [{"content": "YES omission", "notation": "n"}],
    "context-dependency/coreference.json": [{"content": "coreference", "problem": "p", "answer": "a"}],
    "context-dependency/multi-turn.json": [["the first question YES", "a second question"]],
}


def make_c3(root: Path, speech) -> Path:
    from qinyu.eval.runners.c3 import TASKS

    lang = root / "english"
    for rel, refs in C3_EN_REFS.items():
        (lang / "text" / rel).parent.mkdir(parents=True, exist_ok=True)
        (lang / "text" / rel).write_text(json.dumps(refs))
    wav = speech(root / "q.wav", "what does this sentence mean")
    for task in TASKS["english"]:
        folder = lang / "audio" / task.folder
        targets = [folder / "0" / "0.wav", folder / "0" / "1.wav"] if task.subtest == "MultiTurn" else [folder / "0.wav"]
        for t in targets:
            t.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(wav, t)
    (lang / "audio" / "context-dependency" / "coreference-detection" / "0.wav").unlink()  # a missing question
    return root


# Test-only judge prompts in the layout of C3's prompts.json (system_prompts / evaluation_prompts,
# by language folder, then prompt key). The texts are short stand-ins written for these tests,
# each with the placeholders the runner fills for its task.
C3_TEST_PROMPTS = {
    "system_prompts": {"english": "test system (en)", "chinese": "test system (zh)"},
    "evaluation_prompts": {
        "english": {
            "ambiguity_phonological_heterograph": "Item: {content}\nAsked: {problem}\nRef: {notation}\n"
                                                  "<answer>{answer}</answer>",
            **{f"ambiguity_{key}": "Item: {content}\nRef: {notation}\n<answer>{answer}</answer>"
               for key in ("phonological_pause", "phonological_stress", "phonological_intonation",
                           "semantic_lexical")},
            "ambiguity_semantic_syntactic": "Item: {content}\nRef: {ambiguity}{interpretations}\n"
                                            "<answer>{answer}</answer>",
            "context_dependency_omission_detection": "Item: {content}\n<answer>{answer}</answer>",
            "context_dependency_omission_completion": "Item: {content}\nRef: {notation}\n<answer>{answer}</answer>",
            "context_dependency_coreference_detection": "Item: {content}\n<answer>{answer}</answer>",
            "context_dependency_coreference_resolution": "Item: {content}\nAsked: {problem}\n"
                                                         "Ref: {correct_answer}\n<answer>{answer}</answer>",
            "context_dependency_multi_turn": "Dialogue:{dialogues}\nEnd of dialogue.",
        },
        "chinese": {
            "ambiguity_phonological": "Item: {content}\nRef: {annotation}\n<answer>{answer}</answer>",
            "ambiguity_semantic": "Item: {content}\nRef: {annotation}\n<answer>{answer}</answer>",
            "context_dependency_omission_detection": "D:[{dialogue_content}] A:[{answer}]",
            "context_dependency_omission_completion": "D:[{dialogue_content}] R:[{omission_complete}] A:[{answer}]",
            "context_dependency_coreference_detection": "D:[{dialogue_content}] A:[{answer}]",
            "context_dependency_coreference_resolution": "D:[{dialogue_content}] R:[{coreference_complete}] "
                                                         "A:[{answer}]",
            "context_dependency_multi_turn": "{dialogues}",
        },
    },
}


def write_prompts(path: Path, prompts: dict) -> Path:
    path.write_text(json.dumps(prompts, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def without(prompts: dict, *keys: str) -> dict:
    """A deep copy of ``prompts`` with the entry at ``keys`` removed."""
    out = json.loads(json.dumps(prompts))
    node = out
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]
    return out


def c3_script(body, user):
    if "UNPARSABLE" in user:
        return "I cannot decide."
    return "Reasoning... The answer is: yes." if "YES" in user else "Reasoning... The answer is: no."


def test_c3_end_to_end(tiny, speech, tmp_path, judge):
    import hashlib

    judge.answer = c3_script
    data = make_c3(tmp_path / "C3", speech)
    out = tmp_path / "out"
    prompts = write_prompts(tmp_path / "c3-prompts.json", C3_TEST_PROMPTS)
    args = ["c3", "--model", str(tiny), "--data", str(data), "--out", str(out), "--judge-prompts", str(prompts)]
    assert run_cli(*args) == 2  # no judge configured: stops, names the judge
    assert run_cli(*args, "--judge-url", judge.url, "--judge-model", "judge-1", "--batch", "4") == 0
    rep = report(out)
    assert rep["judged_on"].startswith("the text reply")

    # C3's answer layout: {i}.txt + {i}.wav, multi-turn {i}/{j}.txt
    en = out / "english"
    assert (en / "ambiguity" / "phonological" / "pause" / "0.txt").is_file()
    assert (en / "ambiguity" / "phonological" / "pause" / "0.wav").is_file()
    assert (en / "context-dependency" / "multi-turn" / "0" / "1.txt").is_file()

    # the judge saw C3's protocol with the file's prompts: its system prompt, temperature 0, the reply text
    first = judge.requests[0]
    assert first["messages"][0]["content"] == "test system (en)" and first["temperature"] == 0.0
    assert first["max_tokens"] == 2048 and first["model"] == "judge-1"
    answer0 = (en / "ambiguity" / "phonological" / "heterograph" / "0.txt").read_text()
    asked = [m["messages"][1]["content"] for m in judge.requests if "YES heterograph" in m["messages"][1]["content"]]
    assert asked == [f"Item: YES heterograph\nAsked: p\nRef: n\n<answer>{answer0}</answer>"]
    multi = [m["messages"][1]["content"] for m in judge.requests if m["messages"][1]["content"].startswith("Dialogue:")]
    assert multi and multi[0].startswith("Dialogue:\nA:\n```\nthe first question YES\n```\nB:\n```\n")
    # the report says which prompt file produced the numbers
    sha = hashlib.sha256(prompts.read_bytes()).hexdigest()
    assert any(str(prompts.resolve()) in n and sha[:12] in n for n in rep["notes"])
    judge_label = f"judge-1 (prompts c3-prompts.json sha256:{sha[:12]})"

    # Phono: generation (no manual verdict) failed, heterograph yes, pause no, stress yes, intonation unparsable
    phono = row(rep, "Phono acc. (%)", "english")
    assert (phono["value"], phono["n"], phono["failed"], phono["judge"]) == (40.0, 3, 2, judge_label)
    assert row(rep, "Semantic acc. (%)", "english")["value"] == 50.0
    assert row(rep, "Omission acc. (%)", "english")["value"] == 100.0
    coref = row(rep, "Coref acc. (%)", "english")
    assert (coref["value"], coref["failed"]) == (0.0, 1)  # detection's audio is missing: failed, not right
    assert row(rep, "MultiTurn acc. (%)", "english")["value"] == 100.0
    overall = row(rep, "Overall (%)", "english")
    assert overall["value"] == pytest.approx((40 + 50 + 100 + 0 + 100) / 5) and "macro" in overall["aggregation"]
    assert row(rep, "overall, micro (%)", "english")["value"] == pytest.approx(100 * 6 / 12)
    reasons = {k: v["reason"] for k, v in items(out).items() if v["status"] != "ok"}
    assert "manual" in reasons["english/ambiguity/phonological/generation/0"]
    assert "does not parse" in reasons["english/ambiguity/phonological/intonation/0"]
    assert "not found" in reasons["english/context-dependency/coreference-detection/0"]
    quoted = [q for q in rep["quoted"] if q["metric"] == "Overall (%)"]
    assert quoted and quoted[0]["value"] == 44.05 and quoted[0]["quoted"] is True

    # re-run with a manual verdict for the generation item: nothing regenerated, the judge's
    # answers come from its cache, and the item now counts
    asked_before = judge.count
    (out / "manual.json").write_text(json.dumps({"english/ambiguity/phonological/generation/0":
                                                 "The answer is: yes."}))
    assert run_cli(*args, "--judge-url", judge.url, "--judge-model", "judge-1") == 0
    rep2 = report(out)
    assert rep2["generated"] == 0 and rep2["reused"] == 11 and judge.count == asked_before
    assert row(rep2, "Phono acc. (%)", "english")["value"] == 60.0

    # the judge is down: every judged item fails with the reason, none is right
    assert run_cli(*args, "--judge-url", closed_port_url(), "--judge-model", "judge-1",
                   "--judge-retries", "0") == 0
    rep3 = report(out)
    assert rep3["generated"] == 0
    assert row(rep3, "Semantic acc. (%)", "english")["failed"] == 2
    assert row(rep3, "Semantic acc. (%)", "english")["value"] == 0.0
    assert all("failed after 1 attempt(s)" in v["reason"] for k, v in items(out).items()
               if v["status"] != "ok" and "semantic" in k)


def test_c3_chinese_prompts_follow_c3():
    """The Chinese templates are filled the way C3's evaluate.py fills them."""
    from qinyu.eval.runners.c3 import TASKS, judge_prompt

    zh = C3_TEST_PROMPTS["evaluation_prompts"]["chinese"]
    tasks = {t.folder: t for t in TASKS["chinese"]}
    ref = {"history": ["甲：你去吗？", "乙：去。"], "omission_complete": "乙：我去。"}
    prompt = judge_prompt(zh["context_dependency_omission_completion"], "chinese",
                          tasks["context-dependency/omission-completion"], ref, ["我去"])
    assert prompt == "D:[甲：你去吗？\n乙：去。\n] R:[乙：我去。] A:[我去]"
    multi = {"history": ["第一问", "中间"], "question": "第一问"}
    prompt = judge_prompt(zh["context_dependency_multi_turn"], "chinese", tasks["context-dependency/multi-turn"],
                          multi, ["答一", "答二", "答三"])
    assert prompt.startswith("\n甲说：\n```\n第一问\n```\n乙说：\n```\n答一\n```\n甲说：\n```\n中间\n```")
    with pytest.raises(ValueError, match="annotation"):
        judge_prompt(zh["ambiguity_semantic"], "chinese", tasks["ambiguity/semantic"], {"content": "x"}, ["a"])


def test_c3_prompt_file_is_checked_before_anything_runs(tmp_path):
    """Every key the selected languages need and every placeholder is checked on load."""
    from qinyu.eval.judge import ScorerMissing
    from qinyu.eval.runners.base import RunnerError
    from qinyu.eval.runners.c3 import load_prompts

    with pytest.raises(ScorerMissing, match=r"prompts\.json.*github\.com/step-out/C3"):
        load_prompts(None, ["english"])
    with pytest.raises(RunnerError, match="file not found"):
        load_prompts(tmp_path / "nowhere.json", ["english"])
    path = tmp_path / "p.json"
    ok = load_prompts(write_prompts(path, C3_TEST_PROMPTS), ["english", "chinese"])
    assert ok.system == {"english": "test system (en)", "chinese": "test system (zh)"}
    # only the languages being run need their keys
    load_prompts(write_prompts(path, without(C3_TEST_PROMPTS, "evaluation_prompts", "chinese")), ["english"])
    with pytest.raises(RunnerError, match=r"\['evaluation_prompts'\]\['chinese'\] is missing"):
        load_prompts(path, ["chinese"])
    with pytest.raises(RunnerError, match=r"'system_prompts'\]\['english'\] is missing"):
        load_prompts(write_prompts(path, without(C3_TEST_PROMPTS, "system_prompts", "english")), ["english"])
    bad = json.loads(json.dumps(C3_TEST_PROMPTS))
    bad["evaluation_prompts"]["english"]["ambiguity_semantic_lexical"] = "Item: {content} {grade}"
    with pytest.raises(RunnerError, match=r"ambiguity_semantic_lexical'\] uses unknown placeholder\(s\) \{grade\}"):
        load_prompts(write_prompts(path, bad), ["english"])
    bad["evaluation_prompts"]["english"]["ambiguity_semantic_lexical"] = "Item: {content"
    with pytest.raises(RunnerError, match="not a str.format template"):
        load_prompts(write_prompts(path, bad), ["english"])
    path.write_text("[1, 2]")
    with pytest.raises(RunnerError, match="expected a JSON object"):
        load_prompts(path, ["english"])


def test_c3_without_or_with_an_incomplete_prompt_file_stops_before_generating(tiny, speech, tmp_path, judge,
                                                                              capsys):
    from qinyu.eval.judge import ScorerMissing
    from qinyu.eval.runners import run_benchmark
    from qinyu.eval.runners.base import RunOptions

    data = make_c3(tmp_path / "C3", speech)
    out = tmp_path / "out"
    args = ["c3", "--model", str(tiny), "--data", str(data), "--out", str(out), "--judge-url", judge.url,
            "--judge-model", "judge-1"]
    assert run_cli(*args) == 2  # the judge is there, its prompts are not
    err = capsys.readouterr().err
    assert "a required scorer is missing" in err and "prompts.json" in err and "step-out/C3" in err
    with pytest.raises(ScorerMissing, match="--judge-prompts"):
        run_benchmark("c3", RunOptions(model=tiny, data=data, out=out, max_steps=int(MAX_STEPS),
                                       judge=judge_client(judge), progress=False))

    incomplete = write_prompts(tmp_path / "c3-prompts.json", without(C3_TEST_PROMPTS, "evaluation_prompts",
                                                                     "english", "context_dependency_multi_turn"))
    assert run_cli(*args, "--judge-prompts", str(incomplete)) == 2
    err = capsys.readouterr().err
    assert "context_dependency_multi_turn" in err and str(incomplete) in err
    assert not (out / "items").exists() and not judge.requests  # nothing generated, nothing judged


def judge_client(server):
    from qinyu.eval.judge import Judge

    return Judge(server.url, "judge-1", retries=0)


# --------------------------------------------------------------------------------------
# URO-Bench
# --------------------------------------------------------------------------------------
def make_uro(root: Path, speech) -> Path:
    basic = root / "basic"
    for name in ("Repeat", "AlpacaEval", "GaokaoEval"):
        speech(basic / name / "audio" / "0.wav", "please say hello world")
    lines = {
        "Repeat": [{"source_wav": "audio/0.wav", "source_text": "say hello world", "target_text": "hello world"},
                   {"source_wav": "audio/missing.wav", "source_text": "say hi", "target_text": "hi"}],
        "AlpacaEval": [{"source_wav": "audio/0.wav", "source_text": "tell me a joke"},
                       {"source_wav": "audio/0.wav", "source_text": "tell me another"}],
        "GaokaoEval": [{"source_wav": "audio/0.wav", "source_text": "pick one", "target_text": ["A", "B"]}],
    }
    for name, rows in lines.items():
        (basic / name / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(basic / "GaokaoEval" / "test.jsonl", "a") as f:
        f.write("{broken json\n")
    (basic / "NotABasicSet").mkdir()
    (basic / "NotABasicSet" / "test.jsonl").write_text("")
    return root


# A test-only URO prompt file (the schema docs/eval.md describes), with short stand-in texts.
URO_TEST_PROMPTS = {
    "system": "test judge system",
    "open": "MODE open\nQ: {question}\nA: {answer}",
    "semi-open": "MODE semi-open\nQ: {question}\nA: {answer}\nRef: {reference}",
    "qa": "MODE qa\nQ: {question}\nA: {answer}\nRef: {reference}",
}


def uro_script(body, user):
    if user.startswith("MODE qa"):
        return "Yes"
    return ["4", "5", "3"]  # open / semi-open: three samples, mean 4


def test_uro_end_to_end(tiny, speech, tmp_path, judge):
    judge.answer = uro_script
    data = make_uro(tmp_path / "URO-Bench-data", speech)
    out = tmp_path / "out"
    prompts = write_prompts(tmp_path / "uro-prompts.json", URO_TEST_PROMPTS)
    base = ["uro", "--model", str(tiny), "--data", str(data), "--out", str(out), "--judge-url", judge.url,
            "--judge-model", "mini", "--judge-prompts", str(prompts)]
    assert run_cli(*base) == 2  # no recogniser for "ASR of the reply": stops, names Whisper-large-v3
    assert not (out / "items").exists()
    assert run_cli(*base, "--asr", "slm", "--limit", "1") == 0  # interrupted after the first item of each set
    assert run_cli(*base, "--asr", "slm") == 0
    rep = report(out)
    assert (rep["generated"], rep["reused"]) == (1, 3)
    assert rep["judged_on"] == "an ASR transcript of the speech reply"
    assert any("NotABasicSet" in n for n in rep["notes"])

    # URO's inference layout
    assert (out / "AlpacaEval" / "audio" / "0000.wav").is_file() and (out / "AlpacaEval" / "audio" / "0001.wav").is_file()
    pred = [json.loads(x) for x in (out / "AlpacaEval" / "pred_text.jsonl").read_text().splitlines()]
    assert [list(p) for p in pred] == [["0000"], ["0001"]]
    gt = [json.loads(x) for x in (out / "GaokaoEval" / "gt_text.jsonl").read_text().splitlines()]
    assert gt[0]["0000"] == "A / B" and len(gt) == 2  # every line, the malformed one included

    # gpt-4o-mini's settings, the file's system message and templates
    sent = judge.requests[0]
    assert (sent["n"], sent["temperature"], sent["top_p"], sent["max_tokens"]) == (3, 0.5, 0.95, 1024)
    assert sent["messages"][0]["content"] == "test judge system"
    users = [r["messages"][1]["content"] for r in judge.requests]
    assert any(u.startswith("MODE open\nQ: tell me a joke\nA: ") for u in users)
    assert all("{" not in u for u in users)

    per_item = items(out)
    expected = np.mean([0.0 if not per_item[k]["answer"].strip() else 4.0 for k in ("AlpacaEval/0000",
                                                                                    "AlpacaEval/0001")]) * 20
    alpaca = row(rep, "AlpacaEval (open)", "en")
    assert alpaca["value"] == pytest.approx(expected) and alpaca["scorer"].startswith("slm")
    import hashlib

    sha = hashlib.sha256(prompts.read_bytes()).hexdigest()[:12]
    assert alpaca["judge"] == f"mini (prompts uro-prompts.json sha256:{sha})"
    assert any(str(prompts.resolve()) in n and sha in n for n in rep["notes"])
    gaokao = row(rep, "GaokaoEval (qa)", "en")
    assert (gaokao["n"], gaokao["failed"]) == (1, 1)  # the malformed line: failed, counted 0
    yes = 0.0 if not per_item["GaokaoEval/0000"]["answer"].strip() else 1.0
    assert gaokao["value"] == pytest.approx(yes * 100 / 2)
    repeat = row(rep, "Repeat (wer)", "en")
    assert (repeat["n"], repeat["failed"], repeat["normaliser"], repeat["judge"]) == (1, 1, "uro-en v1", None)
    assert "malformed JSON" in per_item["GaokaoEval/0001"]["reason"]
    assert "not found" in per_item["Repeat/0001"]["reason"]
    assert not [r for r in rep["scores"] if r["metric"] in ("Understanding", "Avg.")]  # incomplete categories

    # the text reply judged instead (--judge-text): the generation is reused
    out_text = tmp_path / "out"
    assert run_cli(*base, "--judge-text") == 0
    rep_t = report(out_text)
    assert rep_t["generated"] == 0 and rep_t["judged_on"] == "the text reply (--judge-text)"
    assert row(rep_t, "AlpacaEval (open)", "en")["scorer"] == "text reply (--judge-text)"


def test_uro_judge_failures_are_counted(tiny, speech, tmp_path, judge):
    data = make_uro(tmp_path / "URO-Bench-data", speech)
    out = tmp_path / "out"
    prompts = write_prompts(tmp_path / "uro-prompts.json", URO_TEST_PROMPTS)
    base = ["uro", "--model", str(tiny), "--data", str(data), "--out", str(out), "--judge-url", judge.url,
            "--judge-text", "--subset", "AlpacaEval", "--subset", "GaokaoEval", "--judge-retries", "0",
            "--judge-prompts", str(prompts)]

    judge.mode = "error"  # HTTP 500
    assert run_cli(*base, "--judge-model", "m-500") == 0
    judged = [k for k, v in items(out).items() if v["answer"] and v["answer"].strip()]
    assert judged  # the tiny model's text replies are not empty, so the judge is asked
    for k in judged:
        assert "HTTP 500" in items(out)[k]["reason"]

    judge.mode = "malformed"  # 200 with a body that is not JSON
    assert run_cli(*base, "--judge-model", "m-bad") == 0
    for k in judged:
        assert "not JSON" in items(out)[k]["reason"]

    judge.mode, judge.answer = "ok", lambda body, user: "I would say it is fine"  # does not parse
    assert run_cli(*base, "--judge-model", "m-chatty") == 0
    rep = report(out)
    for k in judged:
        assert "does not parse" in items(out)[k]["reason"]
    alpaca = row(rep, "AlpacaEval (open)", "en")
    assert alpaca["failed"] == len([k for k in judged if k.startswith("AlpacaEval")])
    assert alpaca["value"] == 0.0  # nothing unparsable is scored above 0


def test_uro_prompt_file_checks_and_filling(tmp_path):
    from qinyu.eval.judge import ScorerMissing
    from qinyu.eval.runners.base import RunnerError
    from qinyu.eval.runners.uro import load_prompts

    with pytest.raises(ScorerMissing, match=r"mark_gpt\.py.*Ruiqi-Yan/URO-Bench"):
        load_prompts(None, {"open"})
    path = tmp_path / "p.json"
    # only the judged modes being run are required
    load_prompts(write_prompts(path, without(URO_TEST_PROMPTS, "qa")), {"open", "semi-open"})
    with pytest.raises(RunnerError, match=r"key \['qa'\] is missing \(needed by mode qa: GaokaoEval"):
        load_prompts(path, {"open", "qa"})
    with pytest.raises(RunnerError, match=r"key \['system'\] is missing"):
        load_prompts(write_prompts(path, without(URO_TEST_PROMPTS, "system")), {"open"})
    # open is filled with question and answer only; any other {name} is refused, other braces are text
    with pytest.raises(RunnerError, match=r"\['open'\] uses unknown placeholder\(s\) \{reference\}"):
        load_prompts(write_prompts(path, {**URO_TEST_PROMPTS, "open": "{question} {answer} {reference}"}), {"open"})
    with pytest.raises(RunnerError, match=r"unknown placeholder\(s\) \{score\}"):
        load_prompts(write_prompts(path, {**URO_TEST_PROMPTS, "qa": "{question} {score}"}), {"qa"})
    prompts = load_prompts(write_prompts(path, {**URO_TEST_PROMPTS, "open": 'Q={question} A={answer} {"x": 1}'}),
                           {"open", "qa"})
    assert prompts.fill("open", "q", "a", "r") == 'Q=q A=a {"x": 1}'
    # replaced in turn, as mark_gpt.py: a question holding "{answer}" gets the answer there too
    assert prompts.fill("qa", "why {answer}", "b", "c") == "MODE qa\nQ: why b\nA: b\nRef: c"
    assert prompts.fill("open", "q", "{reference}", "r").endswith("A={reference} {\"x\": 1}")


def test_uro_without_or_with_an_incomplete_prompt_file_stops_before_generating(tiny, speech, tmp_path, judge,
                                                                               capsys):
    data = make_uro(tmp_path / "URO-Bench-data", speech)
    out = tmp_path / "out"
    args = ["uro", "--model", str(tiny), "--data", str(data), "--out", str(out), "--judge-url", judge.url,
            "--judge-model", "mini", "--asr", "slm"]
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert "a required scorer is missing" in err and "--judge-prompts" in err and "URO-Bench" in err
    incomplete = write_prompts(tmp_path / "uro-prompts.json", without(URO_TEST_PROMPTS, "qa"))
    assert run_cli(*args, "--judge-prompts", str(incomplete)) == 2
    err = capsys.readouterr().err
    assert "['qa'] is missing" in err and str(incomplete) in err
    assert not (out / "items").exists() and not judge.requests
    # Repeat alone is scored by WER: no judge, no prompts needed
    assert run_cli("uro", "--model", str(tiny), "--data", str(data), "--out", str(out), "--asr", "slm",
                   "--subset", "Repeat") == 0


# --------------------------------------------------------------------------------------
# CharacterEval
# --------------------------------------------------------------------------------------
def make_charactereval(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    examples = [
        {"id": 1, "role": "小明", "novel_name": "书", "context": "小红：你好\n小明：你好呀\n小红：今天去哪"},
        {"id": 2, "role": "无名", "novel_name": "书", "context": "小红：嗨"},  # no profile for this role
        {"id": 3, "role": "小明", "novel_name": "书", "context": "小红：在吗"},  # id not in id2metric
        {"id": 4, "role": "话多", "novel_name": "书", "context": "小红：说吧"},  # prompt longer than the context
    ]
    # the published files: test_data.jsonl is one JSON array, id2metric.jsonl one JSON dict
    (data / "test_data.jsonl").write_text(json.dumps(examples, ensure_ascii=False, indent=4))
    profiles = {"小明": {"姓名": "小明", "性别": "男"}, "话多": {"姓名": "话多", "人物经历": "很长的故事。" * 800}}
    (data / "character_profiles.json").write_text(json.dumps(profiles, ensure_ascii=False))
    (data / "id2metric.jsonl").write_text(json.dumps({"1": [["Fluency", "对话流利度"], ["Empathy", "共情度"]],
                                                      "4": [["Fluency", "对话流利度"]]}, ensure_ascii=False))
    return root


class LengthRM:
    """A deterministic stand-in for BaichuanCharRM (an interface test, not a reward model)."""

    name = "length-rm (test double)"

    def __init__(self, fail_on: str | None = None):
        self.fail_on, self.calls = fail_on, []

    def score(self, profile, context, response, metric_zh):
        self.calls.append((profile, context, response, metric_zh))
        if metric_zh == self.fail_on:
            raise RuntimeError("scripted reward-model failure")
        return 1.0 + (len(response) + len(metric_zh)) % 5


def test_charactereval_prompt_is_get_response_py():
    from qinyu.eval.runners.charactereval import dialogue_messages, rm_input_text

    profile = {"姓名": "小明", "性别": "男"}
    history, query = dialogue_messages(profile, "小明", "小红：你好\n小明：你好呀\n小红：今天去哪")
    assert history == [
        ("user", "{'姓名': '小明', '性别': '男'}\n现在请你扮演一个角色扮演专家。请你根据上述信息扮演小明进行对话。\n"),
        ("assistant", "好的！现在我来扮演小明。"), ("user", "小红：你好"), ("assistant", "小明：你好呀")]
    assert query == "小红：今天去哪"
    history, _ = dialogue_messages(profile, "小明", "小明：我先说\n小红：好")
    assert history[1] == ("assistant", "好的！现在我来扮演小明。我首先发话：我先说")
    with pytest.raises(ValueError, match="last context line"):
        dialogue_messages(profile, "小明", "小红：你好\n小明：你好呀")
    assert rm_input_text(profile, "c", "r", "共情度") == ("<RoleInfo>\n\n{'姓名': '小明', '性别': '男'}\n\n<Context>\n\nc"
                                                       "\n\n<Response>\n\nr\n\n<Dimension>\n\n共情度")


def test_charactereval_end_to_end_with_a_test_reward_model(tiny, tmp_path):
    from qinyu.eval.runners import run_benchmark
    from qinyu.eval.runners.base import RunOptions

    data = make_charactereval(tmp_path / "CharacterEval")
    out = tmp_path / "out"
    # no reward model: the CLI stops, naming the published scorer
    assert run_cli("charactereval", "--model", str(tiny), "--data", str(data), "--out", str(out)) == 2

    rm = LengthRM()
    options = RunOptions(model=tiny, data=data, out=out, max_steps=int(MAX_STEPS), reward_model=rm, progress=False)
    rep = run_benchmark("charactereval", options)
    per_item = items(out)
    assert per_item["1"]["status"] == "ok"
    assert "no profile" in per_item["2"]["reason"] and "id2metric" in per_item["3"]["reason"]
    assert "exceeds the model's context" in per_item["4"]["reason"]  # the tiny model holds 4,096 positions
    response = per_item["1"]["response"]
    assert "\n" not in response  # first line only
    assert {c[3] for c in rm.calls} == {"对话流利度", "共情度"} and rm.calls[0][0] == {"姓名": "小明", "性别": "男"}
    flu = row(rep, "Flu (Fluency)")
    assert flu["value"] == 1.0 + (len(response) + 5) % 5 and (flu["n"], flu["failed"]) == (1, 1)
    assert flu["scorer"] == "length-rm (test double)"
    assert row(rep, "KE (Exposure)")["value"] is None  # no annotated pairs: no number
    assert not [r for r in rep["scores"] if r["metric"] in ("CST", "CNV", "ATR")]
    assert any("not comparable" in n for n in rep["notes"])
    generation = json.loads((out / "generation.jsonl").read_text())
    assert [g["id"] for g in generation] == [1, 2, 3, 4] and generation[1]["model_output"] == "ERROR"

    # a reward-model failure fails its pair; the reply is not generated again
    rep2 = run_benchmark("charactereval", RunOptions(model=tiny, data=data, out=out, max_steps=int(MAX_STEPS),
                                                     reward_model=LengthRM(fail_on="共情度"), progress=False))
    assert rep2["generated"] == 0
    emp = row(rep2, "Emp (Empathy)")
    assert (emp["value"], emp["n"], emp["failed"]) == (None, 0, 1)
    assert "scripted reward-model failure" in items(out)["1"]["reason"]


# --------------------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------------------
def test_cli_rejects_bad_arguments_by_name(tiny, tmp_path, capsys):
    data = tmp_path / "d"
    data.mkdir()
    cases = [
        (["asr", "--model", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o")], "no config.json"),
        (["asr", "--model", str(tiny), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
         "does not exist"),
        (["asr", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"), "--normaliser", "x"],
         "known: seedtts-en"),
        (["c3", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"), "--judge-url", "http://x"],
         "--judge-model"),
        (["asr", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"), "--asr", "kaldi:x"],
         "--asr 'kaldi:x'"),
        (["asr", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o")], "wav.scp is missing"),
        (["asr", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"), "--judge-text"],
         "uro only"),
        (["seedtts", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"), "--judge-prompts",
          str(tmp_path / "p.json")], "c3 and uro only"),
        (["c3", "--model", str(tiny), "--data", str(data), "--out", str(tmp_path / "o"), "--judge-prompts",
          str(tmp_path / "absent.json")], "absent.json: file not found"),
    ]
    for args, message in cases:
        assert run_cli(*args) == 2, args
        assert message in capsys.readouterr().err, (args, message)


def test_recognisers_that_are_not_here_stop_the_run_by_name(tiny, speech, tmp_path, capsys):
    from qinyu.eval.runners.base import parse_asr_specs

    assert parse_asr_specs(["whisper:/m/w=1", "zh=paraformer:/m/p", "en=slm"]) == {
        "*": "whisper:/m/w=1", "zh": "paraformer:/m/p", "en": "slm"}
    data = make_seedtts(tmp_path / "seedtts_testset", speech)
    out = tmp_path / "out"
    assert run_cli("seedtts", "--model", str(tiny), "--data", str(data), "--out", str(out), "--subset", "en",
                   "--asr", f"whisper:{tmp_path / 'no-whisper'}") == 2
    assert "Whisper folder" in capsys.readouterr().err
    assert run_cli("seedtts", "--model", str(tiny), "--data", str(data), "--out", str(out), "--subset", "zh",
                   "--asr", f"zh=paraformer:{tmp_path / 'no-paraformer'}") == 2
    assert "paraformer" in capsys.readouterr().err
    assert not (out / "items").exists()  # nothing generated before the scorer is known


def test_a_resumed_run_does_not_mix_settings(tiny, speech, tmp_path, capsys):
    speech(tmp_path / "data" / "u0.wav", "hello")
    (tmp_path / "data" / "wav.scp").write_text("u0 u0.wav\n")
    (tmp_path / "data" / "text").write_text("u0 hello\n")
    out = tmp_path / "out"
    assert run_cli("asr", "--model", str(tiny), "--data", str(tmp_path / "data"), "--out", str(out)) == 0
    assert qinyu_main(["eval", "run", "asr", "--model", str(tiny), "--data", str(tmp_path / "data"), "--out",
                       str(out), "--max-steps", "8", "--quiet"]) == 2
    assert "max_steps 16 -> 8" in capsys.readouterr().err
