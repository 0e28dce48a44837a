"""The OpenAI-protocol judge client against a local HTTP server started here (retries, n,
cache, failures), and the C3 / URO verdict parsers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qinyu.eval.judge import Judge, JudgeError, chat_completions_url, parse_c3_verdict, parse_uro_score

from ..net import free_port


class ScriptedServer:
    """A chat-completions endpoint on 127.0.0.1:<free port>. Each request takes the next
    scripted reply, (status, body), or, when the script is empty, answers "answer <k>" with
    as many choices as ``honour_n`` allows. Every request body is recorded."""

    def __init__(self):
        self.script: list[tuple[int, str]] = []
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.honour_n = True
        self.max_choices = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    status, text = 404, "no such path"
                elif server.script:
                    status, text = server.script.pop(0)
                else:
                    want = body.get("n", 1) if server.honour_n else 1
                    if server.max_choices:
                        want = min(want, server.max_choices)
                    k = len(server.requests)
                    status = 200
                    text = json.dumps({"choices": [{"index": i, "message": {"role": "assistant",
                                                                          "content": f"answer {k}.{i}"}}
                                                   for i in range(want)]})
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


def judge(server, **kw) -> Judge:
    return Judge(server.base_url, "judge-model", backoff_s=0.01, timeout_s=5, **kw)


def test_url():
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_request_shape(server):
    j = judge(server, api_key="k", temperature=0.5, top_p=0.95, max_tokens=64)
    assert j.chat("sys", "question") == ["answer 1.0"]
    body = server.requests[0]
    assert body == {"model": "judge-model", "temperature": 0.5, "top_p": 0.95, "max_tokens": 64,
                    "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "question"}]}
    assert server.headers[0]["Authorization"] == "Bearer k"
    judge(server).chat("", "q")
    assert server.requests[1]["messages"] == [{"role": "user", "content": "q"}]
    assert "top_p" not in server.requests[1] and "Authorization" not in server.headers[1]


def test_unreachable_endpoint_after_retries():
    port = free_port()  # nobody listens on it
    j = Judge(f"http://127.0.0.1:{port}/v1", "m", retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(JudgeError, match=f"127.0.0.1:{port}/v1/chat/completions.*3 attempt"):
        j.chat("s", "u")
    assert j.requests_made == 3


def test_server_error_then_success_is_retried(server):
    server.script = [(500, "boom"), (503, "busy")]
    assert judge(server).chat("s", "u") == ["answer 3.0"]
    assert len(server.requests) == 3
    server.script = [(500, "boom")] * 5
    with pytest.raises(JudgeError, match="HTTP 500"):
        judge(server, retries=1).chat("s", "u")


def test_client_error_is_not_retried(server):
    server.script = [(401, '{"error": "bad key"}')]
    with pytest.raises(JudgeError, match=r"chat/completions: refused the request: HTTP 401.*bad key"):
        judge(server).chat("s", "u")
    assert len(server.requests) == 1


@pytest.mark.parametrize("body, message", [
    ("{not json", "not JSON"),
    ('{"choices": []}', "no choices"),
    ('{"object": "error"}', "no choices"),
    ('{"choices": [{"message": {"content": null}}]}', "no text content"),
])
def test_malformed_response(server, body, message):
    server.script = [(200, body)]
    with pytest.raises(JudgeError, match=message) as err:
        judge(server).chat("s", "u")
    assert server.base_url in str(err.value)


def test_n_samples_when_the_server_honours_n(server):
    assert judge(server, n=3).chat("s", "u") == ["answer 1.0", "answer 1.1", "answer 1.2"]
    assert len(server.requests) == 1 and server.requests[0]["n"] == 3


def test_n_samples_when_the_server_ignores_n(server):
    server.honour_n = False
    assert judge(server, n=3).chat("s", "u") == ["answer 1.0", "answer 2.0", "answer 3.0"]
    assert [r.get("n") for r in server.requests] == [3, 2, None]  # asks only for what is still missing


def test_fewer_choices_than_n(server):
    server.max_choices = 2
    assert judge(server, n=3).chat("s", "u") == ["answer 1.0", "answer 1.1", "answer 2.0"]
    assert len(server.requests) == 2


def test_cache(server, tmp_path):
    first = judge(server, n=2, cache_dir=str(tmp_path)).chat("s", "u")
    assert len(server.requests) == 1
    again = judge(server, n=2, cache_dir=str(tmp_path))  # a new client, e.g. a resumed run
    assert again.chat("s", "u") == first and again.requests_made == 0 and len(server.requests) == 1
    # raising n asks only for the new sample
    assert judge(server, n=3, cache_dir=str(tmp_path)).chat("s", "u")[:2] == first
    assert len(server.requests) == 2 and server.requests[1].get("n") is None
    # anything in the request changes the key: prompt, sampling, model
    judge(server, cache_dir=str(tmp_path)).chat("s", "other question")
    judge(server, cache_dir=str(tmp_path), temperature=0.7).chat("s", "u")
    Judge(server.base_url, "another-model", cache_dir=str(tmp_path)).chat("s", "u")
    assert len(server.requests) == 5
    # the key is never stored
    judge(server, cache_dir=str(tmp_path), api_key="secret-key", max_tokens=7).chat("s", "u")
    assert not any("secret-key" in p.read_text() for p in tmp_path.rglob("*.json"))


def test_c3_verdicts():
    en = "Reasoning ... The answer is: yes."
    assert parse_c3_verdict(en, "en") is True
    assert parse_c3_verdict("the answer is: Yes", "en") is True
    assert parse_c3_verdict("... the answer is: no.", "en") is False
    # the LAST marker decides
    assert parse_c3_verdict("The answer is: yes? On reflection, The answer is: no.", "en") is False
    # C3 checks each capitalisation on its own: a yes after either spelling's last marker is right
    assert parse_c3_verdict("The answer is: yes. Hmm, the answer is: no.", "en") is True
    for bad in ("Yes.", "the answer is: maybe", "THE ANSWER IS: yes", "The answer is: **Yes**", ""):
        assert parse_c3_verdict(bad, "en") is None
    assert parse_c3_verdict("分析……最终答案为：是。", "zh") is True
    assert parse_c3_verdict("最终答案为：是。再想想，最终答案为：否。", "zh") is False
    assert parse_c3_verdict("最终答案为: 是", "zh") is None  # ASCII colon is not C3's marker
    with pytest.raises(ValueError, match="'en' or 'zh'"):
        parse_c3_verdict("x", "fr")


def test_uro_scores():
    assert parse_uro_score("4", "open") == 4.0
    assert parse_uro_score(" 5\n", "semi-open") == 5.0
    for bad in ("0", "6", "4.5", "Score: 4", "four", ""):
        assert parse_uro_score(bad, "open") is None
    assert parse_uro_score("Yes", "qa") == 1.0
    assert parse_uro_score("No", "qa") == 0.0
    for bad in ("yes", "Yes.", "No, because", ""):  # URO-Bench counts only an exact "Yes" as right
        assert parse_uro_score(bad, "qa") is None
    with pytest.raises(ValueError, match="mode"):
        parse_uro_score("4", "wer")
