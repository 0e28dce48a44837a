"""The text backends: the OpenAI-protocol client against a local server, and templates."""

import json
import time

import pytest

from qinyu.data.synth.llm import LLMError, OpenAIChat, TemplateBackend, chat_completions_url, parse_json_reply

from .servers import ChatServer, free_port


def client(url, tmp_path=None, **kw):
    kw.setdefault("backoff_s", 0.01)
    return OpenAIChat(url + "/v1", "test-model", api_key="sk-secret", cache_dir=tmp_path, **kw)


def test_url_is_completed():
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/x/chat/completions") == "http://h:1/x/chat/completions"


def test_retries_after_a_500():
    with ChatServer(fail_first=1) as server:
        llm = client(server.url, retries=2)
        assert llm.complete("sys", "hello") == "echo: hello"
    assert len(server.requests) == 2  # the 500, then the answer
    assert llm.stats["retries"] == 1
    body = server.requests[-1]["body"]
    assert body["model"] == "test-model" and body["messages"][0] == {"role": "system", "content": "sys"}
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-secret"


def test_gives_up_after_retries_and_names_the_url():
    with ChatServer(fail_first=10) as server:
        llm = client(server.url, retries=2)
        with pytest.raises(LLMError, match=rf"{server.url}/v1/chat/completions.*3 attempt.*HTTP 500"):
            llm.complete("sys", "hello")
    assert len(server.requests) == 3


def test_cache_hit_asks_the_server_once(tmp_path):
    with ChatServer() as server:
        llm = client(server.url, tmp_path)
        first = llm.complete("sys", "question")
        second = client(server.url, tmp_path).complete("sys", "question")  # a new process, same cache
        other = llm.complete("sys", "another question")
    assert first == second == "echo: question" and other == "echo: another question"
    assert len(server.requests) == 2
    cached = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    assert len(cached) == 2 and all("sk-secret" not in json.dumps(c) for c in cached)  # the key is never stored


def test_unreachable_endpoint_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    llm = client(url, retries=1)
    with pytest.raises(LLMError, match=rf"{url}/v1/chat/completions failed after 2 attempt\(s\): unreachable"):
        llm.complete("sys", "hello")


def test_client_errors_are_not_retried():
    with ChatServer() as server:
        llm = OpenAIChat(server.url + "/wrong", "m", retries=3, backoff_s=0.01)
        with pytest.raises(LLMError, match=r"refused the request: HTTP 404"):
            llm.complete("sys", "hello")
    assert len(server.requests) == 1


def test_rate_limit_spaces_requests():
    with ChatServer() as server:
        llm = client(server.url, rate_per_s=20)
        t = time.monotonic()
        for i in range(5):
            llm.complete("sys", f"q{i}")
        assert time.monotonic() - t >= 4 / 20 - 0.01


def test_template_backend_is_deterministic_and_order_free():
    payload = json.dumps({"dialogue": [{"role": "user", "text": "What is two plus two?"},
                                       {"role": "assistant", "text": "It is four."}], "language": "en"})
    a = TemplateBackend(seed=1)
    first = a.complete("", payload, task="rewrite")
    a.complete("", json.dumps({"title": "X", "part": None, "voice": None}), task="song_request")
    assert TemplateBackend(seed=1).complete("", payload, task="rewrite") == first == a.complete("", payload,
                                                                                                  task="rewrite")
    assert parse_json_reply(first, "rewrite")["dialogue"][1]["text"].lower().endswith("it's four.")
    with pytest.raises(LLMError, match="unknown task"):
        a.complete("", payload, task="poem")


def test_parse_json_reply_tolerates_fences_and_chatter():
    assert parse_json_reply('Sure! ```json\n{"score": 7}\n``` hope that helps', "score") == {"score": 7}
    assert parse_json_reply('Here: {"a": [1, 2]} done', "x") == {"a": [1, 2]}
    with pytest.raises(LLMError, match="holds no JSON"):
        parse_json_reply("I cannot do that.", "score")
