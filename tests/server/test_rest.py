import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from qinyu.model import new_checkpoint
from qinyu.server.app import create_app

from ..net import free_port


@pytest.fixture(scope="module")
def client(tmp_path_factory, speaking_checkpoint):
    root = tmp_path_factory.mktemp("server")
    return TestClient(create_app(speaking_checkpoint, library=root / "voices.sqlite", max_steps=24))


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["sample_rate"] == 16000
    assert r.json()["trained"] is False


def test_speech_returns_wav(client):
    r = client.post("/v1/audio/speech", json={"input": "good morning"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    wav, sr = sf.read(io.BytesIO(r.content))
    assert sr == 16000 and len(wav) % 1280 == 0
    assert client.post("/v1/audio/speech", json={"input": ""}).status_code == 422
    r = client.post("/v1/audio/speech", json={"input": "hi", "voice": "nobody"})
    assert r.status_code == 404 and "no voice named 'nobody'" in r.json()["detail"]


def test_transcriptions(client):
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000, format="WAV")
    r = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", buf.getvalue(), "audio/wav")})
    assert r.status_code == 200 and isinstance(r.json()["text"], str)
    r = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"not audio", "audio/wav")})
    assert r.status_code == 400 and "cannot read audio 'a.wav'" in r.json()["detail"]


def test_voices_crud(client):
    vec = list(np.random.default_rng(1).normal(0, 1, 192))
    r = client.post("/v1/voices", json={"name": "tian", "vector": vec})
    assert r.status_code == 201 and r.json()["name"] == "tian"
    assert [v["name"] for v in client.get("/v1/voices").json()["voices"]] == ["tian"]
    assert client.post("/v1/voices", json={"name": "tian", "vector": vec}).status_code == 400
    assert client.post("/v1/voices", json={"name": "x", "vector": [1.0] * 3}).status_code == 400
    assert client.post("/v1/voices", json={"name": "y", "description": "a calm man"}).status_code == 400
    r = client.post("/v1/audio/speech", json={"input": "hello", "voice": "tian"})
    assert r.status_code == 200
    assert client.delete("/v1/voices/tian").status_code == 200
    assert client.delete("/v1/voices/tian").status_code == 404


def test_qinyu_serve_answers_on_loopback(tmp_path):
    """The real server process (uvicorn) on a free loopback port."""
    import subprocess
    import sys
    import time
    import urllib.request

    ck = new_checkpoint(tmp_path / "ck")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "qinyu", "serve", "--model", str(ck), "--port", str(port),
                             "--library", str(tmp_path / "v.sqlite")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline, body = time.time() + 60, None
        while time.time() < deadline and body is None:
            try:
                body = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read())
            except OSError:
                time.sleep(0.2)
        assert body is not None and body["status"] == "ok", proc.stderr.read1(4000) if proc.poll() else "no answer"
    finally:
        proc.terminate()
        proc.wait(10)


def test_sessions_start_from_the_checkpoints_default_prompt_and_voice(tmp_path, speaking_checkpoint):
    """A checkpoint's config system_prompt/default_voice (qinyu-nano ships both) are what a
    session uses until the client sets instructions, a role or a voice."""
    from qinyu.server.backend import Backend

    ck = tmp_path / "ck"
    shutil.copytree(speaking_checkpoint, ck)
    voice = np.arange(192, dtype=np.float32)
    np.save(ck / "assistant.npy", voice)
    config = json.loads((ck / "config.json").read_text())
    config.update(system_prompt="Your Voice Embedding: <|speaker|>", default_voice="assistant.npy")
    (ck / "config.json").write_text(json.dumps(config))
    backend = Backend(ck)
    try:
        default = backend.persona()
        assert default.system == "Your Voice Embedding: <|speaker|>" and np.array_equal(default.voice, voice)
        assert backend.persona(system="Be brief.").system == "Be brief."
        role = backend.persona(role_description="A pirate.", voice=np.zeros(192, np.float32))
        assert role.system is None and role.role_description == "A pirate." and not role.voice.any()
    finally:
        backend.close()
