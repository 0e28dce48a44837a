"""The three pipelines end to end (template backend, espeak-ng), run as resumable,
sharded jobs; per-item failures (LLM down, TTS error, bad song) and filling the gaps."""

import argparse
import json

import pytest
import soundfile as sf

from qinyu.audio.espeak import espeak_available
from qinyu.data.schema import check_file
from qinyu.data.synth.conversation import ConversationPipeline
from qinyu.data.synth.job import Item, JobError, parse_shard, run_job, select
from qinyu.data.synth.llm import OpenAIChat, TemplateBackend
from qinyu.data.synth.profiles import CHARACTERS_BY_KEY
from qinyu.data.synth.roleplay import RoleplayPipeline
from qinyu.data.synth.singing import SingingPipeline
from qinyu.data.synth.svs import song_from_phrases, write_midi
from qinyu.data.synth.tts import EspeakTTS, HTTPInstructTTS

from .servers import ChatServer, TTSServer, free_port

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

DIALOGUES = [
    {"id": "add", "language": "en", "dialogue": [{"role": "user", "text": "What is two plus five?"},
                                                 {"role": "assistant", "text": "Two plus five is seven."}]},
    {"id": "follow", "language": "en", "dialogue": [
        {"role": "user", "text": "What is the capital of France?"},
        {"role": "assistant", "text": "The capital of France is Paris."},
        {"role": "user", "text": "And what about Italy?"},
        {"role": "assistant", "text": "The capital of Italy is Rome."}]},
    {"id": "zh", "language": "zh", "dialogue": [{"role": "user", "text": "三加四等于几？"},
                                                {"role": "assistant", "text": "三加四等于七。"}]},
    {"id": "greet", "language": "en", "dialogue": [{"role": "user", "text": "Good morning!"},
                                                   {"role": "assistant", "text": "Good morning to you."}]},
    {"id": "code", "language": "en", "dialogue": [{"role": "user", "text": "Show me code."},
                                                  {"role": "assistant", "text": "```print(1)```"}]},
]


def samples(out):
    return [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def assert_valid(out, expected):
    count, problems = check_file(out / "samples.jsonl")
    assert problems == [] and count == expected
    for s in samples(out):
        assert len(s["meta"]["transcripts"]) == len(s["audios"])
        for a in s["audios"]:
            info = sf.info(str(out / a))
            assert info.frames / info.samplerate > 0.2


def test_conversation_end_to_end(tmp_path):
    pipe = ConversationPipeline(TemplateBackend(), EspeakTTS(), dialogues=DIALOGUES)
    summary = run_job(pipe, tmp_path, progress=False)
    assert (summary.made, summary.skipped, summary.failed) == (4, 1, 0) and summary.ok
    assert_valid(tmp_path, 4)
    by_id = {s["id"]: s for s in samples(tmp_path)}
    follow = by_id["conv-follow"]
    # user turns are speech; the earlier reply is text history; only the last reply is speech
    assert [m["content"].endswith("<|audio|>") for m in follow["messages"]] == [True, False, True, True]
    assert follow["messages"][1]["content"].endswith("Paris.")
    assert by_id["conv-zh"]["meta"]["language"] == "zh" and by_id["conv-zh"]["meta"]["user_voice"].startswith(
        "user-zh-")
    m = manifest(tmp_path)
    assert m["counts"] == {"planned": 5, "made": 4, "skipped": 1, "failed": 0, "pending": 0, "stale": 0,
                                "samples": 4}
    assert m["skipped"] == [{"id": "conv-code", "reason": "filtered: turn 2 holds markup, code or a link"}]


def test_roleplay_end_to_end(tmp_path):
    chars = [CHARACTERS_BY_KEY["captain"], CHARACTERS_BY_KEY["mira"]]
    pipe = RoleplayPipeline(TemplateBackend(), EspeakTTS(), characters=chars, scenarios=["first-meeting"])
    summary = run_job(pipe, tmp_path, progress=False)
    assert summary.made == 2 and summary.ok
    rows = samples(tmp_path)
    assert_valid(tmp_path, len(rows))
    for s in rows:
        assert s["task"] == "roleplay" and s["messages"][0]["role"] == "system"
        assert 8 <= s["meta"]["script_turns"] <= 15
        assert s["meta"]["description"] in s["messages"][0]["content"]
        assert set(s["meta"]["attributes"]) == {"gender", "age", "pitch", "pace", "texture"}
        assert s["messages"][-1]["role"] == "assistant" and s["messages"][-1]["content"].endswith("<|audio|>")
    assert {s["meta"]["paraphrase"] for s in rows} == {0, 1}  # wordings rotate over items
    assert len({s["meta"]["tag"] for s in rows}) > 1  # instruction tags vary


def _tiny(key, melody, lyrics, language="en"):
    return song_from_phrases(key, key.replace("-", " ").title(), 150, [("the first line", melody, lyrics)],
                             language)


def test_singing_end_to_end_with_bad_songs(tmp_path):
    midi = write_midi(_tiny("mi-re-do", "E4 D4 C4:2", "mi re do"), tmp_path / "mi-re-do.mid", bpm=150)
    overlap = {"title": "Overlap", "notes": [{"pitch": "C4", "start": 0, "duration": 1, "lyric": "la"},
                                            {"pitch": "E4", "start": 0.5, "duration": 1, "lyric": "la"}]}
    empty = {"title": "Empty Lyric", "notes": [{"pitch": "C4", "start": 0, "duration": 0.5, "lyric": "la"},
                                              {"pitch": "E4", "start": 0.5, "duration": 0.5, "lyric": " "}]}
    songs = [_tiny("do-re-mi", "C4 D4 E4:2", "do re mi"), overlap, str(midi), empty]
    pipe = SingingPipeline(TemplateBackend(), EspeakTTS(), songs=songs)
    out = tmp_path / "out"
    summary = run_job(pipe, out, progress=False)
    assert summary.made == 8 and summary.failed == 2
    failed = {f["id"]: f["error"] for f in manifest(out)["failed"]}
    assert failed == {
        "sing-overlap-whole": "SongError: song 'Overlap': notes 1 and 2 overlap: note 1 ends at 1.000 s, note 2 "
                              "starts at 0.500 s (one voice sings one note at a time)",
        "sing-empty-lyric-whole": "SongError: song 'Empty Lyric': note 2 (E4 at 0.500 s): empty lyric"}
    assert_valid(out, 8)
    rows = samples(out)
    for s in rows:
        meta = s["meta"]
        assert s["task"] == "singing" and meta["pitch_accuracy"] >= 0.8
        assert [w for w, _, _ in meta["words"]] == (["do", "re", "mi"] if meta["song"] == "do-re-mi"
                                                    else ["mi", "re", "do"])
        assert meta["request"] and s["messages"][1]["content"].startswith(meta["transcripts"][1])
    named = [s for s in rows if s["meta"]["voice_words"]]
    assert len(named) == 4 and all(s["meta"]["voice_words"] in s["meta"]["request"] for s in named)


def test_resume_skips_finished_items_and_redoes_on_config_change(tmp_path):
    pipe = ConversationPipeline(TemplateBackend(), EspeakTTS(), dialogues=DIALOGUES[:2])
    run_job(pipe, tmp_path, progress=False)
    wav = tmp_path / "wavs" / "conv-add" / "reply.wav"
    stamp = wav.stat().st_mtime_ns
    again = run_job(pipe, tmp_path, progress=False)
    assert (again.made, again.already_done) == (0, 2) and wav.stat().st_mtime_ns == stamp
    other = run_job(ConversationPipeline(TemplateBackend(seed=1), EspeakTTS(), dialogues=DIALOGUES[:2]), tmp_path,
                    progress=False)
    assert other.made == 2  # a different backend configuration makes the items again


def test_sharding_covers_each_item_exactly_once(tmp_path):
    items = [Item(f"i{k}", {}) for k in range(10)]
    shards = [select(items, (i, 3), limit=8) for i in range(3)]
    ids = [it.id for s in shards for it in s]
    assert sorted(ids) == sorted(f"i{k}" for k in range(8)) and len(ids) == len(set(ids))
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) == (0, 1)
    for bad in ("3/3", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(JobError):
            parse_shard(bad)

    pipe = ConversationPipeline(TemplateBackend(), EspeakTTS(), dialogues=DIALOGUES[:4])
    made = []
    for i in range(3):
        summary = run_job(pipe, tmp_path, shard=(i, 3), progress=False)
        made.append(summary.made)
    assert made == [2, 1, 1]
    assert sorted(s["id"] for s in samples(tmp_path)) == sorted(f"conv-{d['id']}" for d in DIALOGUES[:4])
    assert manifest(tmp_path)["counts"]["pending"] == 0
    assert [r["shard"] for r in manifest(tmp_path)["runs"]] == ["0/3", "1/3", "2/3"]


def _run_shard(out, i, n):
    pipe = ConversationPipeline(TemplateBackend(), EspeakTTS(), dialogues=DIALOGUES[:4])
    run_job(pipe, out, shard=(i, n), progress=False)


def test_shards_running_at_once_all_end_up_in_samples(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_run_shard, args=(tmp_path, i, 3)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert sorted(s["id"] for s in samples(tmp_path)) == sorted(f"conv-{d['id']}" for d in DIALOGUES[:4])
    assert len(manifest(tmp_path)["runs"]) == 3


def test_unreachable_llm_fails_items_then_a_rerun_fills_the_gaps(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    down = OpenAIChat(dead, "m", retries=1, backoff_s=0.01, cache_dir=tmp_path / "cache")
    summary = run_job(ConversationPipeline(down, EspeakTTS(), dialogues=DIALOGUES[:3]), tmp_path / "out",
                      progress=False)
    assert (summary.made, summary.failed) == (0, 3)  # every item tried, none stops the job
    failed = manifest(tmp_path / "out")["failed"]
    assert len(failed) == 3 and all(f"{dead}/chat/completions failed after 2 attempt(s): unreachable" in f["error"]
                                    for f in failed)
    with ChatServer() as server:
        up = OpenAIChat(server.url + "/v1", "m", retries=1, backoff_s=0.01, cache_dir=tmp_path / "cache")
        summary = run_job(ConversationPipeline(up, EspeakTTS(), dialogues=DIALOGUES[:3]), tmp_path / "out",
                          progress=False)
    assert (summary.made, summary.failed) == (3, 0)
    assert manifest(tmp_path / "out")["failed"] == [] and manifest(tmp_path / "out")["counts"]["made"] == 3
    assert_valid(tmp_path / "out", 3)


def test_one_failing_llm_item_is_recorded_and_filled_later(tmp_path):
    dialogues = DIALOGUES[:2] + [{"id": "broken", "language": "en", "dialogue": [
        {"role": "user", "text": "BROKEN question?"}, {"role": "assistant", "text": "An answer."}]}]
    with ChatServer(fail_marker="BROKEN") as server:
        llm = OpenAIChat(server.url + "/v1", "m", retries=1, backoff_s=0.01)
        summary = run_job(ConversationPipeline(llm, EspeakTTS(), dialogues=dialogues), tmp_path, progress=False)
    assert (summary.made, summary.failed) == (2, 1)
    assert summary.failures[0][0] == "conv-broken" and "HTTP 500" in summary.failures[0][1]
    with ChatServer() as server:
        llm = OpenAIChat(server.url + "/v1", "m", retries=1, backoff_s=0.01)
        summary = run_job(ConversationPipeline(llm, EspeakTTS(), dialogues=dialogues), tmp_path, progress=False)
    assert (summary.made, summary.already_done, summary.failed) == (1, 2, 0)
    assert_valid(tmp_path, 3)


def test_tts_failure_on_one_item_is_recorded_and_filled_later(tmp_path):
    dialogues = DIALOGUES[:3]
    with TTSServer(fail_marker="Rome") as server:  # the follow-up's last reply cannot be spoken
        tts = HTTPInstructTTS(server.url + "/tts", retries=0)
        summary = run_job(ConversationPipeline(TemplateBackend(), tts, dialogues=dialogues), tmp_path,
                          progress=False)
    assert (summary.made, summary.failed) == (2, 1)
    assert summary.failures[0][0] == "conv-follow" and f"instruct TTS {server.url}/tts on" in \
        summary.failures[0][1]
    assert_valid(tmp_path, 2)
    with TTSServer() as server:
        tts = HTTPInstructTTS(server.url + "/tts", retries=0)
        summary = run_job(ConversationPipeline(TemplateBackend(), tts, dialogues=dialogues), tmp_path,
                          progress=False)
    assert (summary.made, summary.already_done) == (1, 2)
    assert_valid(tmp_path, 3)


def test_command_line(tmp_path, capsys):
    from qinyu.data.synth.cli import add_synth_parser

    parser = argparse.ArgumentParser()
    add_synth_parser(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args(["synth", *argv])
        return args.func(args)

    assert run("singing", "--out", str(tmp_path / "sing"), "--limit", "2", "--quiet") == 0
    assert "singing shard 0/1: 2 item(s): 2 made" in capsys.readouterr().out
    assert_valid(tmp_path / "sing", 2)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    assert run("conversation", "--out", str(tmp_path / "chat"), "--backend", "openai", "--llm-url", dead,
               "--llm-model", "m", "--llm-retries", "0", "--limit", "2", "--quiet") == 1
    err = capsys.readouterr().err
    assert f"failed conv-add-000: LLMError: LLM endpoint {dead}/chat/completions" in err and "run the same" in err
    assert run("roleplay", "--out", str(tmp_path / "rp"), "--shard", "4/2") == 2
    assert "--shard must be i/n" in capsys.readouterr().err
    assert run("roleplay", "--out", str(tmp_path / "sing"), "--limit", "1", "--quiet") == 2  # another job's folder
    assert "holds a 'singing' synthesis job" in capsys.readouterr().err
