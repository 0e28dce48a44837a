"""The web page at / in a real browser: headless Chromium with a fake microphone playing
an espeak utterance talks to a real `qinyu serve` process over /v1/realtime.

The page reports what it did in window.qinyuStats, read through the DevTools protocol.
Needs /usr/bin/chromium (Debian package `chromium`) and espeak-ng; skipped without them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from qinyu.audio.espeak import espeak_available

from ..net import free_port
from . import cdp

pytestmark = [
    pytest.mark.skipif(not Path(cdp.CHROMIUM).exists(),
                       reason=f"{cdp.CHROMIUM} is missing (apt-get install -y chromium): "
                              "the real-browser test needs it"),
    pytest.mark.skipif(not espeak_available(), reason="espeak-ng is missing: no speech for the fake microphone"),
]

PAGE_TIMEOUT_S = 60
REQUIRED_EVENTS = ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                   "response.audio.delta", "response.done")


def fake_mic_wav(path: Path) -> Path:
    """0.5 s silence, a spoken question, 2.5 s silence (the VAD's end of speech, and with
    %noloop Chromium repeats the file's last 10 ms, which must be silence)."""
    import soundfile as sf

    from qinyu.audio.espeak import espeak
    from qinyu.audio.io import resample

    speech, sr = espeak("what is two plus five", voice="en-us")
    speech = resample(speech, sr, 16000)
    wav = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(40000, np.float32)])
    sf.write(str(path), wav, 16000, subtype="PCM_16")
    return path


def wait_health(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"qinyu serve exited with {proc.returncode}")
        try:
            body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read())
            if body.get("status") == "ok":
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"qinyu serve did not answer /health within {timeout} s")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def browser_log_tail(path: Path) -> str:
    # Chromium in a container logs many harmless dbus/ALSA complaints; keep the rest.
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if "dbus" not in ln and "ALSA" not in ln]
    return "\n".join(lines[-30:])


def done(stats) -> bool:
    if not stats:
        return False
    events = stats.get("events", {})
    return (stats["sentChunks"] > 0 and all(events.get(e) for e in REQUIRED_EVENTS)
            and stats["playedSamples"] > 0)


def test_page_talks_and_plays_in_a_real_browser(tmp_path, speaking_checkpoint):
    t0 = time.monotonic()  # the model is built by the session fixture, before this
    wav = fake_mic_wav(tmp_path / "mic.wav")
    port = free_port()
    server_log = tmp_path / "server.log"
    chrome_log = tmp_path / "chromium.log"
    server = browser = None
    stats = None
    try:
        with open(server_log, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "qinyu.cli", "serve", "--model", str(speaking_checkpoint), "--port", str(port),
                 "--max-steps", "48", "--library", str(tmp_path / "voices.sqlite")],
                stdout=log, stderr=subprocess.STDOUT)
        wait_health(port, server)
        t_page = time.monotonic()
        browser, devtools_port = cdp.launch(tmp_path / "chromium-profile", wav,
                                            f"http://127.0.0.1:{port}/?autoconnect=1", chrome_log)
        with cdp.Page(cdp.page_websocket_url(devtools_port)) as page:
            deadline = time.monotonic() + PAGE_TIMEOUT_S
            while time.monotonic() < deadline and not done(stats):
                time.sleep(0.25)
                stats = page.evaluate("window.qinyuStats ? JSON.parse(JSON.stringify(window.qinyuStats)) : null")
            title = page.evaluate("document.title")
            transcript = page.evaluate("document.getElementById('transcript').innerText")
            png = page.screenshot_png()
            print(f"page done in {time.monotonic() - t_page:.1f} s (total {time.monotonic() - t0:.1f} s); "
                  f"title {title!r}; stats {json.dumps(stats)}; transcript {transcript!r}")
        artifacts = [tmp_path] + ([Path(os.environ["QINYU_ARTIFACTS"])] if os.environ.get("QINYU_ARTIFACTS") else [])
        for folder in artifacts:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "browser.png").write_bytes(png)
        assert done(stats), (f"the page did not finish a spoken turn in {PAGE_TIMEOUT_S} s\n"
                             f"stats: {json.dumps(stats, indent=1)}\n"
                             f"server log:\n{server_log.read_text(errors='replace')[-4000:]}\n"
                             f"chromium log (no dbus lines):\n{browser_log_tail(chrome_log)}")
        assert stats["lastError"] is None, stats["lastError"]
        assert stats["sentSamples"] == 640 * stats["sentChunks"]
        assert stats["receivedAudioSamples"] >= stats["playedSamples"] > 0
        assert title == "qinyu: " + stats["state"]
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
        assert (tmp_path / "browser.png").stat().st_size == len(png)
    finally:
        stop(browser)
        stop(server)
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
