"""LLM judge over the OpenAI chat-completions protocol, and the benchmarks' verdict parsers.

C3 and URO-Bench are scored by an LLM reading the model's reply (C3: GPT-4o or
DeepSeek-R1 at temperature 0; URO-Bench: gpt-4o-mini, 3 samples at temperature 0.5,
top_p 0.95). Any server speaking ``POST {base_url}/chat/completions`` can be the judge,
so a local model (vLLM, llama.cpp, ...) can stand in; reports name the judge model.

``Judge.chat`` returns ``n`` answers. Servers that ignore ``n`` (or return fewer
choices) get further requests until there are ``n``. Every answer is cached on disk under
a hash of (endpoint, model, messages, sampling parameters, sample index), so a rerun or a
resumed run asks nothing twice and raising ``n`` later only asks for the new samples. The
API key is never part of the cache.

Failures are never scores: an unreachable endpoint (after ``retries`` retries with
exponential backoff on connection errors, timeouts, HTTP 429 and 5xx), any other HTTP
error, or a malformed response raises ``JudgeError`` naming the URL; the runner counts
the item as failed. A reply that arrives but does not parse is ``None`` from the parsers,
for the same treatment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ..net import PostError, post_json


class ScorerMissing(RuntimeError):
    """A scorer the benchmark needs (judge, ASR, MOS, reward or speaker model) is not
    configured or not present locally; the message names it and where it is published."""


class JudgeError(RuntimeError):
    """The judge endpoint could not be reached, answered with an error, or answered
    something that is not a chat completion."""


def chat_completions_url(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port/v1/chat/completions`` (a full URL is kept)."""
    url = base_url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


class Judge:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, temperature: float = 0.0,
                 n: int = 1, top_p: float | None = None, max_tokens: int = 1024, retries: int = 3,
                 timeout_s: float = 60.0, cache_dir: str | None = None, backoff_s: float = 1.0):
        if n < 1:
            raise ValueError(f"judge samples n must be >= 1, got {n}")
        if retries < 0:
            raise ValueError(f"judge retries must be >= 0, got {retries}")
        self.url = chat_completions_url(base_url)
        self.model = model
        self.api_key = api_key
        self.temperature, self.n, self.top_p, self.max_tokens = temperature, n, top_p, max_tokens
        self.retries, self.timeout_s, self.backoff_s = retries, timeout_s, backoff_s
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.requests_made = 0  # HTTP requests actually sent (cache hits send none)

    def describe(self) -> dict:
        """What a report says about the judge."""
        return {"model": self.model, "url": self.url, "temperature": self.temperature, "top_p": self.top_p,
                "n": self.n, "max_tokens": self.max_tokens}

    # -- asking -------------------------------------------------------------------------
    def chat(self, system: str, user: str) -> list[str]:
        """``n`` answers to one system + user prompt (the system message is left out when empty)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        keys = [self._cache_key(messages, i) for i in range(self.n)]
        answers = [self._cache_get(k) for k in keys]
        missing = [i for i, a in enumerate(answers) if a is None]
        while missing:
            got = self._request(messages, len(missing))
            for i, text in zip(missing, got):
                answers[i] = text
                self._cache_put(keys[i], text)
            missing = missing[len(got):]
        return answers

    def _request(self, messages: list[dict], n: int) -> list[str]:
        """One chat completion asking for ``n`` choices; returns 1..n texts."""
        payload = {"model": self.model, "messages": messages, "temperature": self.temperature,
                   "max_tokens": self.max_tokens}
        if self.top_p is not None:
            payload["top_p"] = self.top_p
        if n > 1:
            payload["n"] = n
        body = self._post(json.dumps(payload).encode("utf-8"))
        try:
            reply = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise JudgeError(f"judge {self.url}: response is not JSON: {body[:200]!r}") from None
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices:
            raise JudgeError(f"judge {self.url}: response has no choices: {body[:200]!r}")
        texts = []
        for choice in choices[:n]:
            content = choice.get("message", {}).get("content") if isinstance(choice, dict) else None
            if not isinstance(content, str):
                raise JudgeError(f"judge {self.url}: a choice has no text content: {json.dumps(choice)[:200]}")
            texts.append(content)
        return texts

    def _post(self, data: bytes) -> bytes:
        def count(attempt: int) -> None:
            self.requests_made += 1

        try:
            return post_json(self.url, data, self.api_key, self.retries, self.backoff_s, self.timeout_s, count)
        except PostError as e:
            raise JudgeError(f"judge {self.url}: {e}") from None

    # -- cache --------------------------------------------------------------------------
    def _cache_key(self, messages: list[dict], sample: int) -> str:
        fields = {"url": self.url, "model": self.model, "messages": messages, "sample": sample,
                  "params": {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> str | None:
        if self.cache_dir is None:
            return None
        try:
            content = json.loads(self._cache_path(key).read_text(encoding="utf-8"))["content"]
        except (OSError, ValueError, KeyError, TypeError):  # absent or a torn write: ask again
            return None
        return content if isinstance(content, str) else None

    def _cache_put(self, key: str, content: str) -> None:
        if self.cache_dir is None:
            return
        path = self._cache_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"model": self.model, "content": content}, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one


# -- verdict parsers ------------------------------------------------------------------------
def parse_c3_verdict(text: str, lang: str) -> bool | None:
    """C3's verdict: True = the model was right, False = wrong, None = the judge's reply does
    not end in a verdict.

    English: right iff the text after the last "The answer is: " or after the last
    "the answer is: " (each spelling on its own, as C3's process_results.py) starts with
    "Yes"/"yes"; wrong if the text after the last marker of either spelling starts with
    "No"/"no". Chinese: after the last "最终答案为：", "是" = right, "否" = wrong.
    C3's own script counts everything that is not right as wrong, so None must be counted
    as not right (a failed item) *and* reported: the accuracy then equals C3's."""
    if lang == "en":
        markers, yes, no = ("The answer is: ", "the answer is: "), ("Yes", "yes"), ("No", "no")
    elif lang == "zh":
        markers, yes, no = ("最终答案为：",), ("是",), ("否",)
    else:
        raise ValueError(f"C3 verdict language must be 'en' or 'zh', got {lang!r}")
    tails = [text.split(m)[-1] for m in markers if m in text]
    if any(t.startswith(yes) for t in tails):
        return True
    if not tails:
        return None
    last = max((text.rfind(m), m) for m in markers)  # the marker that occurs last
    return False if text[last[0] + len(last[1]):].startswith(no) else None


_URO_SCORE = re.compile(r"\s*([1-5])\s*")


def parse_uro_score(text: str, mode: str) -> float | None:
    """One URO-Bench judge sample: "open"/"semi-open" -> the 1..5 score, "qa" -> 1.0 for "Yes",
    0.0 for "No"; None when the reply is not that.

    URO-Bench's mark_gpt.py takes ``int(reply)`` for scores (anything else crashes it) and
    counts a qa sample as right only if the reply is exactly "Yes". We accept the same
    replies up to surrounding whitespace; anything else (a sentence, "yes.", a 0 or 6) is
    None, to be counted as failed (score 0, as URO-Bench would for qa) and reported."""
    if mode in ("open", "semi-open"):
        m = _URO_SCORE.fullmatch(text)
        return float(m.group(1)) if m else None
    if mode == "qa":
        return {"Yes": 1.0, "No": 0.0}.get(text.strip())
    raise ValueError(f"URO judge mode must be 'open', 'semi-open' or 'qa', got {mode!r}")
