"""Turn detection: after the VAD hears the user stop, is the turn over?

Three answers, as TEN Turn Detection gives them (and as the reference web demo uses
them): ``finished`` (reply now), ``unfinished`` (the user paused mid-sentence: keep
listening and join the next segment to this turn) and ``wait`` (the user asked the
assistant to hold on: say nothing, stop any reply still playing).

* ``BuiltinTurnDetector`` needs no weights: a rule on the transcript (a trailing
  conjunction, filler or comma means unfinished; "wait", "hold on", "stop" means wait)
  and, when there is no usable transcript, on the segment's duration.
* ``TENTurnDetector`` runs TEN Turn Detection through transformers from a local folder
  with the reference's system prompt and reads the first generated word.
"""

from __future__ import annotations

import re
from pathlib import Path

FINISHED, UNFINISHED, WAIT = "finished", "unfinished", "wait"
DECISIONS = (FINISHED, UNFINISHED, WAIT)
TEN_SYSTEM_PROMPT = "Determine if this user input requires a response from the assistant."

CONTINUATIONS = {
    "and", "but", "or", "so", "because", "if", "then", "that", "which", "who", "the", "a", "an", "to", "of", "with",
    "for", "um", "uh", "er", "erm", "hmm", "like", "my", "your", "is", "are", "was", "what's",
}
WAIT_PHRASES = ("wait", "hold on", "stop", "one moment", "just a moment", "be quiet", "shut up", "等一下", "等等", "别说了")


class TurnDetectorError(ValueError):
    pass


class BuiltinTurnDetector:
    def __init__(self, min_turn_seconds: float = 0.3):
        self.min_turn_seconds = min_turn_seconds

    def decide(self, text: str | None, seconds: float) -> str:
        words = re.findall(r"[\w']+", (text or "").lower())
        if not words:  # no transcript to judge: a long enough sound is a turn
            return FINISHED if seconds >= self.min_turn_seconds else UNFINISHED
        stripped = (text or "").strip().lower()
        # a hold request is the whole utterance ("wait", "hold on, let me think"), not a question that opens
        # with the word ("wait, what is two plus five?")
        if len(words) <= 5 and "?" not in stripped and any(
                stripped.rstrip(".!") == p or stripped.startswith((p + " ", p + ",")) for p in WAIT_PHRASES):
            return WAIT
        if stripped.endswith((".", "?", "!", "。", "？", "！")) and not stripped.endswith(("...", "..")):
            return FINISHED  # the recogniser punctuated a complete sentence
        if words[-1] in CONTINUATIONS or stripped.endswith((",", "...", "…", "-", "，")):
            return UNFINISHED
        return FINISHED


class TENTurnDetector:
    """TEN Turn Detection (a Qwen2.5-7B fine-tune) from a local transformers folder."""

    NEEDED = ("config.json", "tokenizer_config.json")

    def __init__(self, path, device: str = "cpu", dtype=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        missing = [f for f in self.NEEDED if not (path / f).is_file()]
        if not path.is_dir() or missing or not (list(path.glob("*.safetensors")) or list(path.glob("*.bin"))):
            raise TurnDetectorError(
                f"TEN turn detector folder {path} is incomplete (needs {', '.join(self.NEEDED)} and the weight files); "
                "download TEN-framework/TEN_Turn_Detection from Hugging Face and point the server config's "
                "turn_detector.path at it")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).to(device).eval()

    def decide(self, text: str | None, seconds: float) -> str:
        import torch

        if not text or not text.strip():
            return FINISHED if seconds >= 0.3 else UNFINISHED
        messages = [{"role": "system", "content": TEN_SYSTEM_PROMPT}, {"role": "user", "content": text}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"].to(self.model.device)
        with torch.no_grad():  # greedy (the reference samples at T 0.1, top_p 0.1: practically greedy)
            out = self.model.generate(ids, max_new_tokens=3, do_sample=False)
        return parse_decision(self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))


def parse_decision(answer: str) -> str:
    """The reference lower-cases and strips the answer; anything but finished/wait keeps listening."""
    word = answer.strip().lower()
    for d in (UNFINISHED, FINISHED, WAIT):  # 'unfinished' first: it contains 'finished'
        if word.startswith(d):
            return d
    return UNFINISHED


def load_turn_detector(spec: dict | None):
    """``None`` or ``{"type": "builtin"}`` -> the rule; ``{"type": "ten", "path": DIR}`` -> TEN."""
    spec = spec or {"type": "builtin"}
    kind = spec.get("type", "builtin")
    if kind == "builtin":
        return BuiltinTurnDetector(float(spec.get("min_turn_seconds", 0.3)))
    if kind == "ten":
        if not spec.get("path"):
            raise TurnDetectorError("turn_detector type 'ten' needs a 'path' to the TEN_Turn_Detection folder")
        return TENTurnDetector(spec["path"], device=spec.get("device", "cpu"))
    raise TurnDetectorError(f"unknown turn_detector type {kind!r} (expected 'builtin' or 'ten')")
