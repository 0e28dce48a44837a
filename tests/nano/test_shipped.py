"""The shipped qinyu-nano (``checkpoints/qinyu-nano``): within its size budget, complete,
and `make demo`'s path answers the bundled spoken questions offline."""

import json

import pytest

from qinyu.demo import NANO_CHECKPOINT, run_demo

pytestmark = pytest.mark.skipif(not (NANO_CHECKPOINT / "config.json").is_file(),
                                reason=f"no shipped checkpoint at {NANO_CHECKPOINT}")


def test_the_shipped_checkpoint_is_complete_and_under_30_mb():
    files = [p for p in NANO_CHECKPOINT.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 30_000_000
    config = json.loads((NANO_CHECKPOINT / "config.json").read_text())
    assert config["trained"] is True
    for rel in (config["codec"]["path"], config["speaker_encoder"], config["cmvn"], config["default_voice"],
                "timbre/timbre.json", "tokenizer.json", "report.md", "report.json"):
        assert (NANO_CHECKPOINT / rel).exists(), rel
    report = json.loads((NANO_CHECKPOINT / "report.json").read_text())
    assert report["items"] == {"qa": 78, "asr": 104, "roleplay": 48, "singing": 12}  # the whole held-out split


def test_the_demo_answers_the_bundled_questions_offline(tmp_path):
    answers = run_demo(tmp_path, serve=False, max_steps=200)
    assert len(answers) == 3 and all(answers.values())
    wavs = sorted(tmp_path.glob("reply-*.wav"))
    assert len(wavs) == 3 and all(w.stat().st_size > 10_000 for w in wavs)  # real speech, not an empty file
