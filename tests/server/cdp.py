"""A small Chrome DevTools Protocol client for the browser test: start headless
Chromium with a fake microphone, evaluate JavaScript in the page, take screenshots.

Only the DevTools HTTP endpoint (/json/list) and one WebSocket per page are used, so no
driver (chromedriver, playwright, selenium) is needed."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

CHROMIUM = "/usr/bin/chromium"


class CDPError(RuntimeError):
    pass


def chromium_args(user_data_dir, fake_audio_wav, url) -> list[str]:
    """The flags known to work headless on these machines (DESIGN §8)."""
    return [
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={user_data_dir}",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        # %noloop: the utterance is heard once; the wav ends in silence so no tail repeats.
        f"--use-file-for-fake-audio-capture={fake_audio_wav}%noloop",
        "--remote-debugging-port=0", "--window-size=1000,800",
        url,
    ]


def launch(user_data_dir, fake_audio_wav, url, log_path) -> tuple[subprocess.Popen, int]:
    """Start Chromium on ``url``; returns the process and its DevTools port (read from the
    DevToolsActivePort file Chromium writes once it listens, so no port is guessed)."""
    user_data_dir = Path(user_data_dir)
    log = open(log_path, "wb")
    proc = subprocess.Popen(chromium_args(user_data_dir, fake_audio_wav, url), stdout=log, stderr=subprocess.STDOUT)
    port_file = user_data_dir / "DevToolsActivePort"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CDPError(f"chromium exited with {proc.returncode}; see {log_path}")
        try:
            first = port_file.read_text().splitlines()[0]
            return proc, int(first)
        except (OSError, IndexError, ValueError):
            time.sleep(0.05)
    proc.kill()
    raise CDPError("chromium did not open its DevTools port within 20 s")


def page_websocket_url(port: int, timeout: float = 10) -> str:
    """The DevTools WebSocket of the first page target."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2).read())
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise CDPError("no page target in DevTools")
        time.sleep(0.1)


class Page:
    """One page's DevTools session (a context manager): request/response calls; events
    are ignored."""

    def __init__(self, ws_url: str, timeout: float = 10):
        self.ws_url = ws_url
        self.timeout = timeout
        self.ids = itertools.count(1)
        self.ws = None

    def __enter__(self) -> "Page":
        # websockets wants its sync connection used as a context manager.
        self._conn = connect(self.ws_url, max_size=None, open_timeout=self.timeout)
        self.ws = self._conn.__enter__()
        return self

    def __exit__(self, *exc):
        return self._conn.__exit__(*exc)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CDPError(f"{method}: no answer within {self.timeout} s")
            msg = json.loads(self.ws.recv(timeout=left))
            if msg.get("id") != msg_id:
                continue  # an event or a stale answer
            if "error" in msg:
                raise CDPError(f"{method}: {msg['error']}")
            return msg.get("result", {})

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (JSON-serialisable values only)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise CDPError(f"evaluate {expression!r}: {res['exceptionDetails'].get('text')}")
        return res["result"].get("value")

    def screenshot_png(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
