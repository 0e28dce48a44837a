"""The nano corpus: format, the held-out rules, resuming (tiny scale: a few items per kind)."""

import json
import shutil

import pytest

from qinyu.cli import main
from qinyu.data.schema import check_file
from qinyu.nano import corpus as nc

TINY = 0.02


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("nano") / "corpus"
    assert main(["data", "nano-corpus", "--out", str(out), "--scale", str(TINY), "--character-tts", "--quiet"]) == 0
    return out


def test_files_pass_the_schema_and_hold_every_kind(tiny_corpus):
    for name in ("train.jsonl", "heldout.jsonl"):
        count, problems = check_file(tiny_corpus / name)
        assert count > 0 and problems == [], problems
    train = nc.read_jsonl(tiny_corpus / "train.jsonl")
    assert {s["task"] for s in train} == {"chat", "asr", "tts", "roleplay", "singing"}
    meta = nc.read_jsonl(tiny_corpus / "heldout_meta.jsonl")
    held = {s["id"]: s for s in nc.read_jsonl(tiny_corpus / "heldout.jsonl")}
    assert [m["id"] for m in meta] == list(held)
    kinds = {m["kind"] for m in meta}
    assert kinds == {"qa", "asr", "roleplay", "singing"}
    for m in meta:
        ref, sample = m["reference"], held[m["id"]]
        assert m["tests"] and "unseen user voice" in m["tests"]
        if m["kind"] == "qa":
            assert ref["answer"] and ref["reply"] in sample["messages"][-1]["content"]
            assert ("number" in ref) == (m["sub"] in ("add", "sub", "follow-arith"))
        elif m["kind"] == "asr":
            assert sample["messages"][0]["content"] == nc.ASR_PROMPT and sample["messages"][1]["content"] == ref["text"]
        elif m["kind"] == "roleplay":
            assert ref["voice"] in nc.ROLEPLAY_VOICES and ref["description"] in sample["messages"][0]["content"]
        else:
            assert ref["song"] in nc.NANO_SONGS and ref["notes"] and ref["part"]
    info = json.loads((tiny_corpus / "nano.json").read_text())
    assert info["hours"]["total"] > 0 and info["split_rules"] == nc.SPLIT_RULES and not info["failed"]
    voices = json.loads((tiny_corpus / "voices" / "voices.json").read_text())
    assert set(nc.ROLEPLAY_VOICES) <= set(voices) and all(len(v["clips"]) == 3 for v in voices.values())


def test_every_train_reply_is_read_again_in_a_role_play_voice(tiny_corpus):
    train = nc.read_jsonl(tiny_corpus / "train.jsonl")
    replies = {s["id"]: s["messages"][-1]["content"] for s in train
               if s["task"] == "chat" and s["meta"]["nano"]["kind"] == "qa"}
    read = [s for s in train if s["meta"]["nano"]["kind"] == nc.CHARACTER_TTS]
    assert replies and sorted(s["meta"]["nano"]["source"] for s in read) == sorted(replies)
    for s in read:
        assert s["task"] == "tts" and s["meta"]["voice"] in nc.ROLEPLAY_VOICES
        assert s["messages"][0]["content"] == nc.TTS_PROMPT.format(text=s["meta"]["transcripts"][0])
        assert s["messages"][1]["content"] == replies[s["meta"]["nano"]["source"]]
        assert s["audios"][0].startswith(f"{nc.CHARACTER_TTS}/") and (tiny_corpus / s["audios"][0]).is_file()
    # the plain TTS pair of the same reply is in the assistant's voice: only the voice vector differs
    plain = {s["meta"]["nano"]["source"]: s["meta"]["voice"] for s in train
             if s["task"] == "tts" and s["meta"]["nano"]["kind"] == "tts"}
    assert set(plain) == set(replies) and not set(plain.values()) & set(nc.ROLEPLAY_VOICES)
    # off by default: the folder stays, the split files leave it out
    default, _, _ = nc.merge(tiny_corpus)
    assert len(default) == len(train) - len(read) and not any(s["id"].endswith(tuple(nc.ROLEPLAY_VOICES))
                                                              for s in default if s["task"] == "tts")


def test_the_held_out_rules_hold_in_the_written_files(tiny_corpus, tmp_path):
    assert nc.check_split(tiny_corpus) == []
    # the check does catch a leak: a train sample spoken by a held-out voice, a held-out paraphrase
    leaky = tmp_path / "leaky"
    shutil.copytree(tiny_corpus, leaky, ignore=shutil.ignore_patterns("*.wav"))
    rows = nc.read_jsonl(leaky / "train.jsonl")
    chat = next(s for s in rows if s["task"] == "chat")
    chat["meta"]["nano"]["user_voices"] = [nc.HELDOUT_USER_VOICES[0]]
    chat["meta"]["nano"]["operands"] = [[1, "+", 1]]
    rp = next(s for s in rows if s["task"] == "roleplay")
    rp["meta"]["nano"]["paraphrase"] = nc.HELDOUT_PARAPHRASES[0]
    (leaky / "train.jsonl").write_text("".join(json.dumps(s) + "\n" for s in rows))
    problems = nc.check_split(leaky)
    assert any("held-out user voice" in p for p in problems)
    assert any("held-out operand pair 1 + 1" in p for p in problems)
    assert any("held-out paraphrase" in p for p in problems)


def test_the_full_plan_keeps_the_rules_and_covers_the_domain():
    """Scale 1, planned only (no audio): the split rules, checked item by item."""
    plan = nc.plans(seed=0, scale=1.0)
    train = [it for items in plan.values() for it in items if it.spec["nano"]["split"] == "train"]
    held = [it for items in plan.values() for it in items if it.spec["nano"]["split"] == "heldout"]
    assert all(it.id.startswith("ho-") for it in held) and not any(it.id.startswith("ho-") for it in train)
    seen_sums, seen_diffs = set(), set()
    for it in train:
        nano = it.spec["nano"]
        assert not nc.heldout_user_voice(it.spec["user_voice"]), it.id
        for a, op, b in nano.get("operands", []):
            assert not nc.heldout_pair(a, op, b), it.id
            if 0 <= a <= nc.MAX_OPERAND and 0 <= b <= nc.MAX_OPERAND and nano["sub"] in ("add", "sub"):
                (seen_sums if op == "+" else seen_diffs).add(a + b if op == "+" else a - b)
        assert not any(nc.heldout_phrasing(p) for p in nano.get("phrasings", []) if ":" in p), it.id
        if "phrasings" in it.spec:  # song requests
            kind = nano["sub"]
            assert all(k < len(nc.REQUESTS[("en", kind)]) - 1 for k in it.spec["phrasings"]), it.id
        if nano["kind"] == "roleplay":
            assert not nc.heldout_paraphrase(it.spec["paraphrase"])
    assert seen_sums == set(range(2 * nc.MAX_OPERAND + 1)) and seen_diffs == set(range(nc.MAX_OPERAND + 1))
    for it in held:
        nano = it.spec["nano"]
        assert nc.heldout_user_voice(it.spec["user_voice"])
        if "unseen operand pair" in nano["tests"]:
            assert nc.heldout_pair(*nano["operands"][0])
        if "unseen question phrasing" in nano["tests"]:
            assert nc.heldout_phrasing(nano["phrasings"][-1])
        if nano["kind"] == "roleplay":
            assert nc.heldout_paraphrase(it.spec["paraphrase"])
        if nano["kind"] == "singing":
            assert it.spec["phrasings"] == [len(nc.REQUESTS[("en", nano["sub"])]) - 1]
    # held-out pairs are never asked in train in either order, and some are held out
    pairs = {tuple(o) for it in held for o in it.spec["nano"].get("operands", [])[:1]
             if "unseen operand pair" in it.spec["nano"]["tests"]}
    assert len(pairs) >= 20
    # eight distinct described voices, each held out, and six songs
    rp_held = {it.spec["character"]["key"] for it in held if it.spec["nano"]["kind"] == "roleplay"}
    assert rp_held == set(nc.ROLEPLAY_VOICES)
    attrs = {tuple(sorted(nc.CHARACTERS_BY_KEY[k].attributes().items())) for k in nc.ROLEPLAY_VOICES}
    assert len(attrs) == 8
    assert {it.spec["song"]["key"] for it in train if it.spec["nano"]["kind"] == "singing"} == set(nc.NANO_SONGS)
    # greetings, facts, follow-ups and arithmetic all in both splits
    subs = lambda items: {it.spec["nano"]["sub"] for it in items if it.spec["nano"]["kind"] == "qa"}  # noqa: E731
    assert subs(train) == subs(held) == {"add", "sub", "fact", "greeting", "follow-arith", "follow-fact"}


def test_sums_and_differences_can_be_answered_by_counting_on():
    from qinyu.nano.evaluate import numbers_in

    assert nc.arithmetic_answer(3, "+", 4) == "Three plus four is seven."
    assert nc.arithmetic_answer(3, "+", 4, counting=True) == "Three plus four: four, five, six, seven. Seven."
    assert nc.arithmetic_answer(9, "-", 3, True) == "Nine minus three: eight, seven, six. Six."
    assert nc.arithmetic_answer(5, "+", 0, True) == "Five plus zero is five."
    assert nc.arithmetic_answer(19, "+", 1, True) == "Nineteen plus one: twenty. Twenty."  # follow-ups go past ten
    for a in range(nc.MAX_OPERAND + 1):
        for b in range(nc.MAX_OPERAND + 1):
            for op in "+-" if b <= a else "+":
                c = a + b if op == "+" else a - b
                said = numbers_in(nc.arithmetic_answer(a, op, b, counting=True))
                step = 1 if op == "+" else -1
                # the operands, one number a step from a to the result, then the result once more
                assert said == [a, b] + [a + step * k for k in range(1, b + 1)] + [c], (a, op, b)
    # the follow-ups count on from the first answer's result
    plan = nc.plans(seed=0, scale=1.0, counting=True)["conversation"]
    follow = next(it for it in plan if it.spec["nano"]["sub"] == "follow-arith")
    first, second = (t["text"] for t in follow.spec["dialogue"] if t["role"] == "assistant")
    (a, _, b), (s, op, c) = follow.spec["nano"]["operands"]
    assert first == nc.arithmetic_answer(a, "+", b, True) and second == nc.arithmetic_answer(s, op, c, True)
    assert s == a + b
    # by default the plan answers in one sentence ("Then it is nine." for the follow-up)
    plain = nc.plans(seed=0, scale=1.0)["conversation"]
    assert [it.id for it in plain] == [it.id for it in plan]
    follow = next(it for it in plain if it.spec["nano"]["sub"] == "follow-arith")
    first, second = (t["text"] for t in follow.spec["dialogue"] if t["role"] == "assistant")
    total = s + c if op == "+" else s - c
    assert first == nc.arithmetic_answer(a, "+", b) and second == f"Then it is {nc.number_words(total)}."


def test_scale_grows_train_only_and_plans_are_stable():
    small, big = nc.plans(0, 0.5), nc.plans(0, 2.0)
    one = nc.plans(0, 1.0)
    for name in nc.PIPELINES:
        count = lambda p, split: sum(it.spec["nano"]["split"] == split for it in p[name])  # noqa: E731
        assert count(small, "train") < count(one, "train") < count(big, "train")
        assert count(big, "heldout") == count(one, "heldout") >= count(small, "heldout")
        # an item keeps its spec whatever the scale (so a bigger build reuses a smaller one's audio)
        specs = {it.id: it.spec for it in one[name]}
        assert all(specs[it.id] == it.spec for it in small[name] if it.id in specs)
    assert [it.id for it in nc.plans(0, 1.0)["conversation"]] == [it.id for it in one["conversation"]]
    with pytest.raises(ValueError, match="scale"):
        nc.plans(0, 0)


def test_song_requests_use_the_phrasings_they_are_given():
    llm = nc.NanoTemplates(seed=0)
    payload = {"title": "Mary Had a Little Lamb", "part": "the first line", "voice": None, "language": "en",
               "phrasings": [5]}
    reply = json.loads(llm.complete("", json.dumps(payload), task="song_request"))
    assert reply["phrasing"] == "en-part-5" and nc.heldout_phrasing(reply["phrasing"])
    assert reply["request"] == nc.REQUESTS[("en", "part")][5].format(part="the first line",
                                                                     title="Mary Had a Little Lamb")


def test_a_second_build_reuses_the_audio(tiny_corpus):
    wavs = {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*.wav")}
    before = (tiny_corpus / "train.jsonl").read_text()
    summary = nc.build_corpus(tiny_corpus, scale=TINY, progress=False, character_tts=True)
    assert summary.ok and summary.seconds < 10
    assert {p: p.stat().st_mtime_ns for p in tiny_corpus.rglob("*.wav")} == wavs
    assert (tiny_corpus / "train.jsonl").read_text() == before
    for name in (*nc.PIPELINES, nc.CHARACTER_TTS):
        run = json.loads((tiny_corpus / name / "manifest.json").read_text())["runs"][-1]
        assert run["made"] == 0 and run["already_done"] == run["selected"] > 0
