"""Local HTTP servers for the synthesis tests: an OpenAI-protocol chat server that
answers the pipelines' tasks with the template backend, and an instruct-TTS server.
Both run in a thread on 127.0.0.1 and can be told to fail."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from qinyu.data.synth.conversation import REWRITE_PROMPT, SCORE_PROMPT
from qinyu.data.synth.llm import TemplateBackend
from qinyu.data.synth.roleplay import PARAPHRASE_PROMPT, SCRIPT_PROMPT
from qinyu.data.synth.singing import REQUEST_PROMPT

from ...net import free_port  # noqa: F401  (the synthesis tests import it from here)

TASK_OF_PROMPT = {SCORE_PROMPT: "score", REWRITE_PROMPT: "rewrite", PARAPHRASE_PROMPT: "paraphrase",
                  SCRIPT_PROMPT: "roleplay_script", REQUEST_PROMPT: "song_request"}


class _Server:
    def __init__(self, handler_factory):
        self.requests: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_factory(self))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server, respond):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            status, ctype, data = respond(server, self.path, body)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class ChatServer(_Server):
    """POST /v1/chat/completions. ``fail_first`` requests answer 500; a request whose user
    message contains ``fail_marker`` always answers 500."""

    def __init__(self, fail_first: int = 0, fail_marker: str | None = None, seed: int = 0):
        self.fail_first = fail_first
        self.fail_marker = fail_marker
        self.backend = TemplateBackend(seed)
        super().__init__(lambda s: _handler(s, ChatServer._respond))

    @staticmethod
    def _respond(server, path, body):
        if path != "/v1/chat/completions":
            return 404, "application/json", b'{"error": "not found"}'
        messages = body.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = messages[-1]["content"] if messages else ""
        if server.fail_first > 0:
            server.fail_first -= 1
            return 500, "application/json", b'{"error": "temporarily overloaded"}'
        if server.fail_marker and server.fail_marker in user:
            return 500, "application/json", b'{"error": "this one always fails"}'
        task = TASK_OF_PROMPT.get(system)
        text = server.backend.complete(system, user, task=task) if task else f"echo: {user}"
        reply = {"id": "chatcmpl-test", "object": "chat.completion", "model": body.get("model"),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": "stop"}]}
        return 200, "application/json", json.dumps(reply).encode()


class TTSServer(_Server):
    """POST {text, instruction} -> a wav (espeak-ng); texts containing ``fail_marker`` get 500."""

    def __init__(self, fail_marker: str | None = None):
        self.fail_marker = fail_marker
        super().__init__(lambda s: _handler(s, TTSServer._respond))

    @staticmethod
    def _respond(server, path, body):
        import soundfile as sf

        from qinyu.audio.espeak import espeak

        text = body.get("text", "")
        if server.fail_marker and server.fail_marker in text:
            return 500, "text/plain", b"voice model crashed"
        if text == "not audio":
            return 200, "text/plain", b"hello, I am not a wav file"
        wav, sr = espeak(text)
        buf = io.BytesIO()
        sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
        return 200, "audio/wav", buf.getvalue()
