"""Text backends for the synthesis pipelines: an LLM over HTTP, or templates offline.

Both have ``complete(system, user, task=..., **kw) -> str``. The pipelines send a system
prompt saying what to do and a user message holding the input as JSON, and expect a JSON
answer; ``parse_json_reply`` reads it.

- ``OpenAIChat`` speaks the OpenAI chat-completions protocol (``POST
  {base_url}/chat/completions``), so OpenAI, vLLM, llama.cpp or any compatible server
  can write the data. It retries connection errors, timeouts, HTTP 429 and 5xx with
  exponential backoff, spaces requests to a rate limit, and caches every answer on disk
  under a hash of the request, so a resumed job never pays twice for the same question.
  The API key is sent but never cached or logged. Errors (``LLMError``) name the URL.
- ``TemplateBackend`` answers the same tasks by rule (``templates.py``), with no network
  and no randomness beyond a seed: the same request always gets the same answer. This
  is what builds qinyu-nano's corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
from pathlib import Path

from ...net import PostError, post_json


class LLMError(RuntimeError):
    """The text backend could not answer (unreachable, HTTP error, unusable reply)."""


def chat_completions_url(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000/v1/chat/completions`` (a full URL is kept)."""
    url = base_url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


class RateLimiter:
    """At most ``per_second`` request starts per second (None: unlimited), across threads."""

    def __init__(self, per_second: float | None):
        if per_second is not None and per_second <= 0:
            raise ValueError(f"rate limit must be > 0 requests/second, got {per_second}")
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class OpenAIChat:
    """A chat-completions client with retries, a rate limit and an on-disk answer cache."""

    kind = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, temperature: float = 0.7,
                 max_tokens: int = 2048, retries: int = 3, backoff_s: float = 1.0,
                 rate_per_s: float | None = None, timeout_s: float = 120.0, cache_dir=None):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = chat_completions_url(base_url)
        self.model = model
        self.api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.limiter = RateLimiter(rate_per_s)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # counters, for the manifest and for tests
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}

    def describe(self) -> dict:
        # what decides the answers (the URL does not: any host serving the model will do)
        return {"kind": self.kind, "model": self.model, "temperature": self.temperature}

    def _request_body(self, system: str, user: str, temperature, max_tokens) -> dict:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return {"model": self.model, "messages": messages,
                "temperature": self.temperature if temperature is None else temperature,
                "max_tokens": max_tokens or self.max_tokens}

    def _cache_path(self, body: dict) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps({"url": self.url, **body}, sort_keys=True,
                                        ensure_ascii=False).encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def complete(self, system: str, user: str, task: str | None = None, temperature: float | None = None,
                 max_tokens: int | None = None, **_) -> str:
        """The assistant's reply text. ``task`` only matters to the template backend."""
        body = self._request_body(system, user, temperature, max_tokens)
        cache = self._cache_path(body)
        if cache is not None and cache.is_file():
            try:
                text = json.loads(cache.read_text(encoding="utf-8"))["reply"]
                self.stats["cache_hits"] += 1
                return text
            except (json.JSONDecodeError, KeyError, OSError):
                pass  # a torn cache file is simply asked again
        text = self._post(body)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"request": body, "reply": text}, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp, cache)
        return text

    def _post(self, body: dict) -> str:
        def before(attempt: int) -> None:
            if attempt:
                self.stats["retries"] += 1
            self.limiter.wait()
            self.stats["requests"] += 1

        try:
            raw = post_json(self.url, json.dumps(body).encode(), self.api_key, self.retries, self.backoff_s,
                            self.timeout_s, before)
        except PostError as e:
            raise LLMError(f"LLM endpoint {self.url} {e}") from None
        try:
            reply = json.loads(raw)
            text = reply["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise LLMError(f"LLM endpoint {self.url} answered something that is not a chat completion: "
                           f"{raw[:200]!r}") from None
        if not isinstance(text, str):
            raise LLMError(f"LLM endpoint {self.url} answered a non-text message: {text!r}")
        return text


class TemplateBackend:
    """Answers the pipelines' tasks by rule, deterministically and offline.

    The answer depends only on (seed, task, user message), never on call order, so
    shards and re-runs agree with each other."""

    kind = "template"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}

    def describe(self) -> dict:
        return {"kind": self.kind, "seed": self.seed}

    def complete(self, system: str, user: str, task: str | None = None, **_) -> str:
        from . import templates

        if task not in templates.TASKS:
            raise LLMError(f"template backend: unknown task {task!r}; it answers {sorted(templates.TASKS)}")
        try:
            payload = json.loads(user)
        except json.JSONDecodeError as e:
            raise LLMError(f"template backend: the {task} input is not JSON: {e}") from None
        digest = hashlib.sha256(f"{self.seed}\0{task}\0{user}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        self.stats["requests"] += 1
        return json.dumps(templates.TASKS[task](payload, rng), ensure_ascii=False)


def parse_json_reply(text: str, what: str):
    """The JSON value in an LLM reply (code fences and chatter around it are tolerated)."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1)
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise LLMError(f"{what}: the reply holds no JSON: {text[:200]!r}")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise LLMError(f"{what}: the reply is not valid JSON ({e.msg}): {text[:200]!r}") from None
    return value


def make_llm(kind: str, url: str | None = None, model: str | None = None, api_key: str | None = None,
             seed: int = 0, **kw):
    """The backend named on the command line: ``template`` or ``openai`` (needs url and model)."""
    if kind == "template":
        return TemplateBackend(seed=seed)
    if kind == "openai":
        if not url or not model:
            raise LLMError("the openai backend needs --llm-url (e.g. http://localhost:8000/v1) and --llm-model")
        return OpenAIChat(url, model, api_key=api_key, **kw)
    raise LLMError(f"unknown text backend {kind!r}; expected 'template' or 'openai'")
