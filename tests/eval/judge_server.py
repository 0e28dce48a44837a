"""A local OpenAI-protocol chat-completions server for tests: answers are scripted by a
function of the request; it counts requests and can be told to fail.

    with JudgeServer(lambda body, user: "The answer is: yes.") as server:
        Judge(server.url, "test-judge").chat("system", "user")

``answer(body, user_prompt)`` returns one text (repeated for every requested choice) or
a list of texts (one per choice). ``server.mode`` = "ok" | "error" (HTTP 500) |
"malformed" (200 with a body that is not JSON) | "no-choices" (valid JSON, no choices).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def yes_when(marker: str, yes: str = "The answer is: yes.", no: str = "The answer is: no."):
    """A script: ``yes`` when the user prompt contains ``marker``, else ``no``."""
    return lambda body, user: yes if marker in user else no


class JudgeServer:
    def __init__(self, answer: Callable[[dict, str], str | list[str]] | None = None):
        self.answer = answer or (lambda body, user: "The answer is: yes.")
        self.mode = "ok"
        self.requests: list[dict] = []  # every request body received (also in failing modes)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = {"unparsed": raw.decode("utf-8", "replace")}
                with server._lock:
                    server.requests.append(body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, b'{"error": {"message": "not found"}}')
                if server.mode == "error":
                    return self._send(500, b'{"error": {"message": "scripted failure"}}')
                if server.mode == "malformed":
                    return self._send(200, b'{"choices": [ this is not json')
                if server.mode == "no-choices":
                    return self._send(200, b'{"id": "x", "object": "chat.completion", "choices": []}')
                user = next((m.get("content", "") for m in reversed(body.get("messages", []))
                             if m.get("role") == "user"), "")
                n = int(body.get("n") or 1)
                texts = server.answer(body, user)
                texts = texts if isinstance(texts, list) else [texts] * n
                reply = {"id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion",
                         "created": int(time.time()), "model": body.get("model", ""),
                         "choices": [{"index": i, "message": {"role": "assistant", "content": t},
                                      "finish_reason": "stop"} for i, t in enumerate(texts)],
                         "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
                self._send(200, json.dumps(reply).encode("utf-8"))

            def _send(self, status: int, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="judge-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def start(self) -> "JudgeServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "JudgeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def closed_port_url() -> str:
    """A URL where nothing listens (a judge that is down)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"
