"""The nano domain's further train phrasings (qinyu.nano.rephrase)."""

import random

from qinyu.nano import rephrase as rp
from qinyu.nano.corpus import FACTS, QUESTIONS


def _sample(sid, sub=None, task="chat", operands=(), phrasings=(), **meta):
    return {"id": sid, "task": task, "messages": [{"role": "user", "content": "<|audio|>"},
                                                  {"role": "assistant", "content": "An answer.<|audio|>"}],
            "audio": [{"role": "user", "features": "u.npy"}, {"role": "assistant", "codes": "c.npy"}],
            "meta": {"transcripts": ["The question.", "An answer."], **meta,
                     "nano": {"sub": sub, "operands": [list(o) for o in operands], "phrasings": list(phrasings)}}}


def test_the_rephrasings_share_no_new_trigram_with_a_held_out_phrasing():
    assert rp.check_rephrasings() == []
    # the check can fail: a held-out phrasing itself, and one that borrows three of its words
    held = QUESTIONS["colour"][1][0]
    original = rp.QUESTION_REPHRASINGS["sound"]
    try:
        rp.QUESTION_REPHRASINGS["sound"] = original + [held, "Which noise does {x} give?"]
        problems = rp.check_rephrasings()
    finally:
        rp.QUESTION_REPHRASINGS["sound"] = original
    assert any(f"{held!r} is a held-out phrasing" == p for p in problems)
    assert any(p.startswith("'Which noise does {x} give?' shares") and "'which noise does {}'" not in p
               and "'which noise does'" in p for p in problems)
    # trigrams a corpus train phrasing already has are allowed ("the capital of" is in both)
    assert not any("Do you know the capital" in p for p in problems)


def test_rephrase_says_the_same_thing_in_another_frame():
    rng = random.Random(0)
    add = _sample("qa-add-n-2-3-r0", "add", operands=[(2, "+", 3)], phrasings=["add:t3"])
    outs = {rp.rephrase(add, rng)[0] for _ in range(200)}
    assert len(outs) > 10 and all("two" in o.lower() and "three" in o.lower() for o in outs)
    train = {t.format(a="two", b="three").lower() for t in QUESTIONS["add"][0]}
    assert all(o.lower().split(", ", 1)[-1] not in train for o in outs)  # never the corpus's own phrasings
    sub = _sample("qa-sub-n-9-4-r0", "sub", operands=[(9, "-", 4)], phrasings=["sub:t0"])
    assert all("nine" in o.lower() and "four" in o.lower() for o in (rp.rephrase(sub, rng)[0] for _ in range(50)))
    thing = FACTS["capital"][4][0]
    fact = _sample("qa-fact-capital-4-p2-r0", "fact", phrasings=["capital:t2"])
    assert all(thing in rp.rephrase(fact, rng)[0] for _ in range(50))
    greeting = _sample("qa-greet-bye-p2-r0", "greeting", phrasings=["greet-bye:t2"])
    fillers = {"um", "so", "hey", "okay", "hmm", "oh"}
    said = {rp.rephrase(greeting, rng)[0].lower() for _ in range(200)}
    unfilled = {s.split(", ", 1)[1] if s.split(", ", 1)[0] in fillers else s for s in said}
    assert unfilled == {t.lower() for t in rp.GREETING_REPHRASINGS["bye"]} and len(said) > len(unfilled)
    # songs: the whole song, a line of it, either in a named voice
    whole = _sample("sing-mary-whole-r0", task="singing", title="Mary Had a Little Lamb", part="the whole song",
                    segment=None, voice_words=None)
    line = _sample("sing-mary-part3-r0", task="singing", title="Mary Had a Little Lamb", part="the third line",
                   segment=2, voice_words=None)
    voiced = _sample("sing-mary-part3-v-r0", task="singing", title="Mary Had a Little Lamb", part="the third line",
                     segment=2, voice_words="a deep male voice")
    assert all("Mary Had a Little Lamb" in o and "whole song" not in o for o in (rp.rephrase(whole, rng)[0]
                                                                               for _ in range(30)))
    assert all("the third line of Mary Had a Little Lamb" in rp.rephrase(line, rng)[0] for _ in range(30))
    assert all("a deep male voice" in o and "the third line of Mary" in o for o in (rp.rephrase(voiced, rng)[0]
                                                                                 for _ in range(30)))
    # follow-ups: both questions, the second with its own number or thing
    follow = _sample("qa-follow-n-3-4-r0", "follow-arith", operands=[(3, "+", 4), (7, "-", 2)])
    for first, second in (rp.rephrase(follow, rng) for _ in range(30)):
        assert "three" in first.lower() and "four" in first.lower() and "two" in second.lower()
    ffact = _sample("qa-ffact-sound-4-3-r0", "follow-fact")
    for first, second in (rp.rephrase(ffact, rng) for _ in range(30)):
        assert FACTS["sound"][4][0] in first.lower() and FACTS["sound"][3][0] in second.lower()
    # no known slots: left alone
    assert rp.rephrase(_sample("rp-captain-1", task="roleplay"), rng) is None


def test_rephrased_questions_keep_each_samples_spoken_answer():
    from qinyu.nano.speedrun import rephrased_questions

    add = _sample("qa-add-n-2-3-r0", "add", operands=[(2, "+", 3)], phrasings=["add:t3"])
    follow = {**_sample("qa-follow-n-3-4-r0", "follow-arith", operands=[(3, "+", 4), (7, "+", 1)]),
              "messages": [{"role": "user", "content": "<|audio|>"},
                           {"role": "assistant", "content": "Three plus four is seven."},
                           {"role": "user", "content": "<|audio|>"},
                           {"role": "assistant", "content": "Then it's eight.<|audio|>"}],
              "audio": [{"role": "user", "features": "f0.npy"}, {"role": "user", "features": "f1.npy"},
                        {"role": "assistant", "codes": "c.npy"}]}
    follow["meta"]["transcripts"] = ["How much is three plus four?", "What if I add one?", "Then it's eight."]
    roleplay = _sample("rp-captain-1", task="roleplay")
    rows = rephrased_questions([add, follow, roleplay], copies=3, seed=1)
    assert [r["id"] for r in rows] == [f"{s}-rephrased-{c}" for s in (add["id"], follow["id"]) for c in range(3)]
    for row in rows[:3]:
        assert row["audio"] == [add["audio"][1]] and row["messages"][1] == add["messages"][1]
        assert "two" in row["messages"][0]["content"].lower()
        assert "<|audio|>" not in row["messages"][0]["content"]
    for row in rows[3:]:
        said = [m["content"] for m in row["messages"]]
        assert "three" in said[0].lower() and said[1] == "Three plus four is seven." and "one" in said[2].lower()
        assert said[3] == "Then it's eight.<|audio|>" and row["audio"] == [follow["audio"][2]]



def test_a_held_out_trigram_is_found_in_any_text_and_a_slot_matches_any_word():
    assert rp.says_heldout_trigram("Um, which noise does a cat make?")  # "which noise does": held out only
    assert rp.says_heldout_trigram("so TELL ME THE colour of grass")  # "the colour of {}", in any case
    assert not rp.says_heldout_trigram("What colour is grass?")  # a train phrasing
    assert not rp.says_heldout_trigram("What is the capital of Japan?")  # "the capital of": in train too
    assert not rp.says_heldout_trigram("noise which does")
