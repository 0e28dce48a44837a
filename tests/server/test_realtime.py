"""The realtime WebSocket protocol (docs/protocol.md) through FastAPI's test client, on
the tiny random model with a nano codec: real Silero VAD, real espeak-ng speech."""

import base64
import contextlib
import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from qinyu.server.app import create_app
from qinyu.server.config import ConfigError, ServerConfig

from ..net import free_port


def b64(pcm: np.ndarray) -> str:
    return base64.b64encode((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()).decode()


def stream(ws, pcm: np.ndarray, chunk: int = 320) -> None:
    for i in range(0, len(pcm), chunk):
        ws.send_json({"type": "input_audio_buffer.append", "audio": b64(pcm[i:i + chunk])})


def until(ws, kind: str, limit: int = 5000) -> list[dict]:
    """Events up to and including the first of ``kind``."""
    events = []
    for _ in range(limit):
        events.append(ws.receive_json())
        if events[-1]["type"] == kind:
            return events
    raise AssertionError(f"no {kind} in {limit} events: {[e['type'] for e in events][-20:]}")


def decoded_audio(events) -> np.ndarray:
    parts = [np.frombuffer(base64.b64decode(e["delta"]), "<i2") for e in events if e["type"] == "response.audio.delta"]
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


@pytest.fixture(scope="module")
def app(speaking_checkpoint, tmp_path_factory):
    config = ServerConfig(max_steps=400, max_event_bytes=64 << 10, library=str(tmp_path_factory.mktemp("lib") / "v.db"))
    return create_app(speaking_checkpoint, config=config)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@contextlib.contextmanager
def open_session(client, **update):
    """A connected socket (its session.created read, ``update`` applied) and the created session."""
    with client.websocket_connect("/v1/realtime") as ws:
        created = ws.receive_json()
        assert created["type"] == "session.created"
        if update:
            ws.send_json({"type": "session.update", "session": update})
            assert ws.receive_json()["type"] == "session.updated"
        yield ws, created["session"]


def test_session_created_states_rates_and_defaults(client):
    with open_session(client) as (ws, s):
        assert s["input_audio_sample_rate"] == 16000 and s["output_audio_sample_rate"] == 16000
        assert s["turn_detection"]["type"] == "server_vad" and s["turn_detection"]["threshold"] == 0.7
        assert s["turn_detection"]["silence_duration_ms"] == 500 and s["turn_detection"]["min_speech_duration_ms"] == 200
        assert s["turn_detection"]["interrupt_min_speech_ms"] == 500
        ws.send_json({"type": "session.update", "session": {"role_description": "a calm sailor", "max_response_steps": 30,
                                                            "turn_detection": {"type": "semantic_vad",
                                                                               "silence_duration_ms": 400}}})
        u = ws.receive_json()
        assert u["type"] == "session.updated" and u["session"]["role_description"] == "a calm sailor"
        assert u["session"]["turn_detection"]["type"] == "semantic_vad"
        assert u["session"]["turn_detection"]["silence_duration_ms"] == 400


def test_spoken_question_gets_a_streamed_answer(client, app, utterance):
    """Speech then silence: speech_started, speech_stopped, transcript and audio deltas, response.done."""
    with open_session(client, input_audio_transcription={"model": "slm"}, max_response_steps=60) as (ws, _):
        stream(ws, utterance)
        events = until(ws, "response.done")
        types = [e["type"] for e in events]
        for kind in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                     "input_audio_buffer.committed", "conversation.item.created", "response.created",
                     "response.audio_transcript.delta", "response.audio.delta", "response.audio_transcript.done"):
            assert kind in types, kind
        assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.speech_stopped") \
            < types.index("response.created") < types.index("response.audio.delta")
        started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
        stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
        # the utterance starts after 0.5 s of silence and lasts ~1.4 s
        assert 300 <= started["audio_start_ms"] <= 700 and stopped["audio_end_ms"] - started["audio_start_ms"] > 800
        done = events[-1]["response"]
        assert done["status"] == "incomplete" and done["usage"]["decode_steps"] == 60  # the tiny model never stops
        audio = decoded_audio(events)
        assert len(audio) == round(done["usage"]["audio_ms"] * 16)  # 16 samples per ms at 16 kHz
        text = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
        assert done["output"][0]["content"][0]["transcript"] == text
        rest = [] if "conversation.item.input_audio_transcription.completed" in types else \
            until(ws, "conversation.item.input_audio_transcription.completed")
        tr = next(e for e in events + rest if e["type"] == "conversation.item.input_audio_transcription.completed")
        assert tr["item_id"] == stopped["item_id"] and isinstance(tr["transcript"], str)
        # the turn is in the history: the user's speech and the assistant's text
        session = next(iter(app.state.backend.live.values()))
        assert [t.role for t in session.conv.history] == ["user", "assistant"]
        assert session.conv.history[0].features is not None and session.conv.history[1].text == text


def test_manual_turns_and_text_items(client, utterance):
    with open_session(client, turn_detection=None, max_response_steps=20) as (ws, _):
        ws.send_json({"type": "response.create"})
        e = ws.receive_json()
        assert e["type"] == "error" and e["error"]["code"] == "invalid_state"
        ws.send_json({"type": "input_audio_buffer.commit"})
        assert ws.receive_json()["error"]["code"] == "invalid_state"  # nothing buffered
        stream(ws, utterance)  # no VAD: no speech events, the audio waits for the commit
        ws.send_json({"type": "input_audio_buffer.commit"})
        committed = ws.receive_json()
        assert committed["type"] == "input_audio_buffer.committed"
        assert ws.receive_json()["type"] == "conversation.item.created"
        ws.send_json({"type": "response.create"})
        done = until(ws, "response.done")[-1]
        assert done["response"]["status"] == "incomplete" and done["response"]["usage"]["decode_steps"] == 20
        ws.send_json({"type": "conversation.item.create",
                      "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        assert until(ws, "conversation.item.created")[-1]["item"]["content"][0]["text"] == "hi"
        ws.send_json({"type": "conversation.item.create",
                      "item": {"role": "user", "content": [{"type": "input_text", "text": "<|im_end|>"}]}})
        e = ws.receive_json()
        assert e["type"] == "error" and "special token" in e["error"]["message"]
        ws.send_json({"type": "response.create", "response": {"instructions": "Be brief."}})
        assert until(ws, "response.done")[-1]["response"]["status"] == "incomplete"


def test_ga_event_names(client):
    with open_session(client, type="realtime", turn_detection=None, max_response_steps=12) as (ws, _):
        ws.send_json({"type": "conversation.item.create",
                      "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        ws.send_json({"type": "response.create"})
        types = [e["type"] for e in until(ws, "response.done")]
        assert "response.output_audio.delta" in types and "response.audio.delta" not in types
        assert "response.output_audio_transcript.done" in types


@pytest.fixture(scope="module")
def talker(talker_checkpoint, tmp_path_factory):
    app = create_app(talker_checkpoint, config=ServerConfig(max_steps=400,
                                                            library=str(tmp_path_factory.mktemp("t") / "v.db")))
    with TestClient(app) as client:
        yield app, client


def ask(ws):
    ws.send_json({"type": "conversation.item.create",
                  "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tell me"}]}})
    ws.send_json({"type": "response.create"})


def test_barge_in_while_generating_cancels_the_response(talker, utterance):
    """The user is talking when a reply starts; once their speech reaches 500 ms the reply
    is cancelled mid-generation, the client is told to flush, and the history keeps only
    what could have been heard (a prefix of the reply)."""
    from tests.server.conftest import TALKER_REPLY

    app, client = talker
    with open_session(client, max_response_steps=400, repetition_penalty=1.0) as (ws, _):
        session = next(iter(app.state.backend.live.values()))
        onset = 8000 + 16000 * 35 // 100  # 0.5 s silence + 350 ms of speech: speaking, not yet interrupting
        stream(ws, utterance[:onset])
        until(ws, "input_audio_buffer.speech_started")
        ask(ws)
        created = until(ws, "response.created")[-1]["response"]["id"]
        stream(ws, utterance[onset:])  # the next 150 ms of speech interrupt the reply being generated
        events = until(ws, "output_audio_buffer.cleared")
        assert events[-1]["response_id"] == created
        events += until(ws, "response.done")
        done = events[-1]
        assert done["response"]["id"] == created
        # nothing of the cancelled reply is sent after the client was told to flush
        flushed = next(i for i, e in enumerate(events) if e["type"] == "output_audio_buffer.cleared")
        assert not any(e["type"] == "response.audio.delta" for e in events[flushed:])
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        assert done["response"]["usage"]["decode_steps"] < 60  # the full reply takes more than 60 steps
        heard = done["response"]["output"][0]["content"][0]["transcript"]
        assert TALKER_REPLY.startswith(heard) and len(heard) < len(TALKER_REPLY)
        # the user's turn goes on and gets its own reply, after the cut history
        second = until(ws, "response.done")[-1]["response"]
        assert second["id"] != created
        history = session.conv.history
        assert [t.role for t in history] == ["user", "assistant", "user", "assistant"]
        assert history[0].text == "tell me" and history[1].text == heard and history[2].features is not None


def test_barge_in_while_playing_truncates_to_what_was_heard(talker, utterance):
    """The reply has been generated but its audio is still playing (the server's estimate:
    real time since the first delta): user speech clears playback and cuts the history;
    the client's conversation.item.truncate then moves the cut to what it really played."""
    from tests.server.conftest import TALKER_REPLY

    app, client = talker
    with open_session(client, max_response_steps=400, repetition_penalty=1.0) as (ws, _):
        session = next(iter(app.state.backend.live.values()))
        ask(ws)
        events = until(ws, "response.done")
        done = events[-1]["response"]
        assert done["status"] == "completed"
        generated = "".join(e["delta"] for e in events if e["type"] == "response.audio_transcript.delta")
        assert generated == TALKER_REPLY == done["output"][0]["content"][0]["transcript"]
        sent_ms = done["usage"]["audio_ms"]
        assert sent_ms >= 4000  # 60 frames at 12.5 Hz: seconds of audio still to play
        item_id = done["output"][0]["id"]
        stream(ws, utterance)  # talks over the playback
        events = until(ws, "output_audio_buffer.cleared")
        assert not any(e["type"] == "response.done" for e in events)  # nothing was generating
        history = session.conv.history
        assert history[1].text != TALKER_REPLY and TALKER_REPLY.startswith(history[1].text)
        ws.send_json({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 0})
        assert until(ws, "conversation.item.truncated")[-1]["audio_end_ms"] == 0
        assert history[1].text == ""  # nothing played: nothing heard
        item = session.items[item_id]
        ws.send_json({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                      "audio_end_ms": 2000})
        until(ws, "conversation.item.truncated")
        half = item.reply.text_heard(2000, 12.5)
        assert history[1].text == half and 0 < len(half) < len(TALKER_REPLY) and TALKER_REPLY.startswith(half)
        ws.send_json({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                      "audio_end_ms": sent_ms})
        until(ws, "conversation.item.truncated")
        assert history[1].text == TALKER_REPLY  # all of it played: all of it heard
        ws.send_json({"type": "conversation.item.truncate", "item_id": item_id, "audio_end_ms": sent_ms + 5000})
        assert until(ws, "error")[-1]["error"]["param"] == "audio_end_ms"
        ws.send_json({"type": "conversation.item.truncate", "item_id": "item_nope", "audio_end_ms": 0})
        assert until(ws, "error")[-1]["error"]["code"] == "invalid_state"


def test_text_heard_follows_the_interleave(speaking_checkpoint):
    """A text token counts as heard once the audio steps produced before it have played."""
    from qinyu.engine.engine import StepOutput
    from qinyu.engine.reply import ReplyStream
    from qinyu.layout import load_tokenizer
    from qinyu.model import QinYuForConditionalGeneration

    model = QinYuForConditionalGeneration.from_pretrained(speaking_checkpoint)
    tok = load_tokenizer(speaking_checkpoint)
    reply = ReplyStream(tok, model.layout)
    ids = tok.encode("ab").ids
    reply.feed(StepOutput(0, text_id=ids[0]))  # before any audio
    for _ in range(8):
        reply.feed(StepOutput(0, audio_step=np.zeros(8, np.int64)))
    reply.feed(StepOutput(0, text_id=ids[1]))  # after 8 audio steps
    assert reply.text_heard(0, 12.5) == ""
    assert reply.text_heard(1, 12.5) == "a"  # 0.0125 frames > 0 steps
    assert reply.text_heard(640, 12.5) == "a"  # 8 frames: the second token needs more than 8
    assert reply.text_heard(641, 12.5) == "ab"


def test_bad_events_get_errors_and_the_session_survives(client):
    with open_session(client) as (ws, _):
        cases = [
            ("not json", "invalid_json"),
            ("[1, 2]", "invalid_event"),
            (json.dumps({"no": "type"}), "invalid_event"),
            (json.dumps({"type": "what.ever"}), "unknown_event"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "@@@"}), "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"abc").decode()}),
             "invalid_audio"),
            (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (70 << 10)}), "event_too_large"),
            (json.dumps({"type": "session.update", "session": {"voice": "nobody"}}), "unknown_voice"),
            (json.dumps({"type": "session.update", "session": {"turn_detection": {"type": "magic"}}}), "invalid_event"),
            (json.dumps({"type": "session.update", "session": {"max_response_steps": 10 ** 9}}), "invalid_event"),
            (json.dumps({"type": "response.cancel"}), "invalid_state"),
            ('{"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": NaN}', "invalid_state"),
            ('{"type": "session.update", "session": {"max_response_steps": 1' + "0" * 5000 + "}}", "invalid_json"),
            (json.dumps({"type": "conversation.item.create", "item": {"id": "item_1", "type": "message", "role": "user",
                                                                      "content": [{"type": "input_text", "text": "x"}]}}),
             "invalid_event"),
        ]
        for message, code in cases:
            ws.send_text(message)
            e = ws.receive_json()
            assert e["type"] == "error" and e["error"]["code"] == code, (message[:60], e)
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["error"]["code"] == "invalid_event"
        ws.send_json({"type": "session.update", "session": {"instructions": "still here"}})
        assert ws.receive_json()["session"]["instructions"] == "still here"


def test_fuzz_a_thousand_malformed_events(client, utterance):
    """>= 1000 malformed or random events of every kind; the session answers each and still works."""
    rng = np.random.default_rng(0)
    kinds = ["session.update", "input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
             "conversation.item.create", "response.create", "response.cancel", "conversation.item.truncate",
             "response.audio.delta", "nonsense", "", None, 7]
    values = [None, 0, -1, 1.5, 10 ** 30, "", "x" * 50, "<|im_end|>", [], {}, [1, {"a": None}], True, "@@", "AAAA"]

    def rand_value(depth=0):
        if depth < 2 and rng.random() < 0.3:
            return {str(rng.choice(["session", "audio", "item", "type", "turn_detection", "voice", "audio_end_ms",
                                    "content", "response", "item_id"])): rand_value(depth + 1) for _ in range(3)}
        return values[rng.integers(len(values))]

    def malformed() -> str | bytes:
        r = rng.integers(8)
        if r == 0:
            return bytes(rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8)).decode("latin-1")  # garbage text
        if r == 1:
            return bytes(rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8))  # binary frame
        if r == 2:
            return json.dumps({"type": "input_audio_buffer.append", "audio": "A" * int(rng.integers(65 << 10, 200 << 10))})
        if r == 3:
            return json.dumps({"type": "input_audio_buffer.append",
                               "audio": base64.b64encode(rng.bytes(int(rng.integers(1, 40)) * 2 + 1)).decode()})
        if r == 4:
            return '{"type": "session.update", "session": ' + "[" * int(rng.integers(1, 5000))  # deep, broken
        event = {"type": kinds[rng.integers(len(kinds))]}
        for _ in range(int(rng.integers(0, 4))):
            event[str(rng.choice(["session", "audio", "item", "response", "item_id", "audio_end_ms"]))] = rand_value()
        return json.dumps(event)

    with open_session(client, turn_detection=None, max_response_steps=8) as (ws, _):
        sent = 0
        for round_ in range(10):
            for _ in range(110):
                m = malformed()
                ws.send_bytes(m) if isinstance(m, bytes) else ws.send_text(m)
                sent += 1
            # a marker event: everything before it has been answered when its reply comes back
            ws.send_json({"type": "session.update", "session": {"instructions": f"round {round_}"}})
            events = until(ws, "session.updated", limit=20000)
            while events[-1]["session"]["instructions"] != f"round {round_}":  # an updated from a random valid update
                events += until(ws, "session.updated", limit=20000)
            # responses the fuzz started may still be streaming: let them finish
            ws.send_json({"type": "response.cancel"})
        assert sent >= 1000
        ws.send_json({"type": "input_audio_buffer.clear"})
        until(ws, "input_audio_buffer.cleared", limit=20000)
        ws.send_json({"type": "session.update", "session": {"turn_detection": None, "max_response_steps": 8,
                                                            "instructions": None, "voice": None}})
        until(ws, "session.updated", limit=20000)
        # the session still takes a real turn
        stream(ws, utterance)
        ws.send_json({"type": "input_audio_buffer.commit"})
        until(ws, "conversation.item.created", limit=20000)
        ws.send_json({"type": "response.create"})
        events = until(ws, "response.done", limit=20000)
        while events[-1]["response"]["status"] == "cancelled":  # a cancel from the fuzz rounds may land first
            ws.send_json({"type": "response.create"})
            events = until(ws, "response.done", limit=20000)
        assert events[-1]["response"]["usage"]["decode_steps"] == 8


def test_limits_sessions_keys_origins_and_expiry(speaking_checkpoint, tmp_path, utterance):
    config = ServerConfig(max_sessions=1, api_key="s3cret", allowed_origins=["http://good.example"],
                          max_session_seconds=1.5, library=str(tmp_path / "v.db"))
    with TestClient(create_app(speaking_checkpoint, config=config)) as c:
        for url, headers, code in (("/v1/realtime", {}, "invalid_api_key"),
                                   ("/v1/realtime?api_key=wrong", {}, "invalid_api_key"),
                                   ("/v1/realtime?api_key=s3cret", {"origin": "http://evil.example"},
                                    "origin_not_allowed")):
            with c.websocket_connect(url, headers=headers) as ws:
                assert ws.receive_json()["error"]["code"] == code
                with pytest.raises(WebSocketDisconnect) as e:
                    ws.receive_json()
                assert e.value.code == 1008
        assert c.get("/v1/voices").status_code == 401
        assert c.get("/v1/voices", headers={"authorization": "Bearer s3cret"}).status_code == 200
        with c.websocket_connect("/v1/realtime", subprotocols=["realtime", "openai-insecure-api-key.s3cret"]) as first:
            assert first.receive_json()["type"] == "session.created"
            with c.websocket_connect("/v1/realtime", headers={"authorization": "Bearer s3cret"}) as second:
                e = second.receive_json()
                assert e["type"] == "error" and e["error"]["code"] == "too_many_sessions"
                with pytest.raises(WebSocketDisconnect) as closed:
                    second.receive_json()
                assert closed.value.code == 1013
            # the first session is unaffected ... until its time is up
            first.send_json({"type": "session.update", "session": {"instructions": "x"}})
            assert first.receive_json()["type"] == "session.updated"
            e = until(first, "error")[-1]
            assert e["error"]["code"] == "session_expired"
            with pytest.raises(WebSocketDisconnect):
                first.receive_json()
        assert c.get("/health").json()["sessions"] == 0


def test_server_config_names_bad_settings(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting"):
        ServerConfig.from_dict({"max_sesions": 3})
    with pytest.raises(ConfigError, match="max_sessions must be a positive"):
        ServerConfig.from_dict({"max_sessions": 0})
    bad = tmp_path / "c.yaml"
    bad.write_text("max_sessions: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ServerConfig.load(bad)
    with pytest.raises(ConfigError, match="allowed_origins must be a list"):
        ServerConfig.from_dict({"allowed_origins": "https://app.example.com"})
    with pytest.raises(ConfigError, match="vad_threshold"):
        ServerConfig.from_dict({"vad_threshold": 0.1})
    good = tmp_path / "c.json"
    good.write_text(json.dumps({"max_sessions": 3, "turn_detection": "semantic_vad"}))
    assert ServerConfig.load(good, port=9).max_sessions == 3


class ScriptedDetector:
    """A turn detector that answers from a script (the controller's handling of each
    decision is what is tested; the built-in rule and TEN parsing are in tests/duplex)."""

    def __init__(self, answers):
        self.answers, self.heard = list(answers), []

    def decide(self, text, seconds):
        self.heard.append((text, seconds))
        return self.answers.pop(0)


def test_semantic_vad_joins_unfinished_turns_and_obeys_wait(client, app, utterance):
    backend = app.state.backend
    saved = backend.turn_detector
    backend.turn_detector = ScriptedDetector(["unfinished", "finished", "wait"])
    try:
        with open_session(client, turn_detection={"type": "semantic_vad"}, max_response_steps=10) as (ws, _):
            session = next(s for s in backend.live.values() if s.settings["turn_detection"]["type"] == "semantic_vad")
            stream(ws, utterance)  # "unfinished": no item, no reply yet
            until(ws, "input_audio_buffer.speech_stopped")
            stream(ws, utterance)  # "finished": one item holding both segments, and a reply
            events = until(ws, "response.done")
            assert [e["type"] for e in events].count("input_audio_buffer.committed") == 1
            first, second = (s for _, s in backend.turn_detector.heard)
            assert second > first + 1.0  # the second decision judged both segments together
            assert session.conv.history[0].features is not None
            stream(ws, utterance)  # "wait": the user holds the assistant off; no reply
            until(ws, "input_audio_buffer.speech_stopped")
            deadline = time.time() + 20
            while backend.turn_detector.answers and time.time() < deadline:  # the turn task transcribes first
                time.sleep(0.05)
            assert backend.turn_detector.answers == []
            time.sleep(0.2)
            ws.send_json({"type": "session.update", "session": {"instructions": "marker"}})
            tail = until(ws, "session.updated")
            assert not any(e["type"] in ("response.created", "input_audio_buffer.committed") for e in tail)
            assert len(session.conv.history) == 2
    finally:
        backend.turn_detector = saved


def test_sdk_defaults_ga_nesting_and_session_clock(client, utterance):
    """An SDK's default voice and transcription model are accepted; a GA update's nested
    turn_detection applies; VAD times count from the start of the session's audio."""
    with open_session(client) as (ws, _):
        ws.send_json({"type": "session.update", "session": {
            "type": "realtime", "audio": {"input": {"turn_detection": None, "transcription": {"model": "whisper-1"}},
                                          "output": {"voice": "alloy"}}}})
        s = until(ws, "session.updated")[-1]["session"]
        assert s["turn_detection"] is None and s["voice"] is None and s["event_names"] == "ga"
        assert s["input_audio_transcription"] == {"model": "slm"}  # no Whisper configured: the model's own ASR
        stream(ws, np.zeros(16000 * 3, np.float32))  # 3 s into the buffer (manual mode)
        ws.send_json({"type": "input_audio_buffer.clear"})
        until(ws, "input_audio_buffer.cleared")
        ws.send_json({"type": "session.update", "session": {"turn_detection": {"type": "server_vad"},
                                                            "input_audio_transcription": None}})
        until(ws, "session.updated")
        stream(ws, utterance)
        started = until(ws, "input_audio_buffer.speech_started")[-1]
        assert 3300 <= started["audio_start_ms"] <= 3700  # 3 s before this VAD existed + ~0.5 s of silence


def test_rest_refuses_audio_bombs(speaking_checkpoint, tmp_path):
    """A small compressed upload that would decode to hours of audio is refused from its header."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000 * 400, np.int16), 16000, format="FLAC")  # 400 s of silence, a few KB
    assert len(buf.getvalue()) < 200_000
    with TestClient(create_app(speaking_checkpoint, config=ServerConfig(library=str(tmp_path / "v.db")))) as c:
        r = c.post("/v1/audio/transcriptions", files={"file": ("long.flac", buf.getvalue(), "audio/flac")})
        assert r.status_code == 413 and "limit is 300 s" in r.json()["detail"]
        r = c.get("/v1/voices", headers={"origin": "http://evil.example"})
        assert r.status_code == 200  # no allowed_origins configured: any origin


def test_a_plain_new_checkpoint_serves_text_only(tmp_path, utterance):
    """`qinyu new-checkpoint --preset tiny` has no codec: the realtime session still hears speech
    and answers with text (no audio deltas, modalities say so)."""
    from qinyu.model import new_checkpoint

    ck = new_checkpoint(tmp_path / "plain")
    with TestClient(create_app(ck, config=ServerConfig(library=str(tmp_path / "v.db")))) as c:
        with open_session(c, max_response_steps=12) as (ws, s):
            assert s["modalities"] == ["text"] and s["output_audio_sample_rate"] is None
            stream(ws, utterance)
            events = until(ws, "response.done")
            types = [e["type"] for e in events]
            assert "input_audio_buffer.speech_stopped" in types and "response.audio.delta" not in types
            assert events[-1]["response"]["usage"]["decode_steps"] == 12


def test_a_client_that_stops_reading_is_disconnected_not_queued_for(tmp_path):
    """A client that sends but never reads fills its socket; the session's events then pile
    up in the server, so past max_outbox_events the server ends the session (close 1008
    client_not_reading) instead of holding them all. The real server (uvicorn) and a real
    socket: the client reads nothing after session.created (max_queue=1: its library stops
    taking frames off the socket too)."""
    import socket
    import threading
    import urllib.request

    import uvicorn
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from qinyu.model import new_checkpoint

    config = ServerConfig(library=str(tmp_path / "v.db"), max_outbox_events=8)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(new_checkpoint(tmp_path / "ck"), config=config),
                                           host="127.0.0.1", port=port, log_level="warning",
                                           ws_max_size=4 * config.max_event_bytes))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def sessions() -> int:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read())["sessions"]

    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        # a small receive buffer (no autotuning), so the socket fills after a few hundred kB
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        raw.connect(("127.0.0.1", port))
        with connect(f"ws://127.0.0.1:{port}/v1/realtime", sock=raw, max_size=None, max_queue=1) as ws:
            assert json.loads(ws.recv())["type"] == "session.created"
            assert sessions() == 1
            # each session.update is answered with a session.updated carrying the 4,000-character instructions
            update = json.dumps({"type": "session.update", "session": {"instructions": "x" * 4000}})
            sent = 0
            while sent < 20000:
                try:
                    ws.send(update)
                except (ConnectionClosed, OSError):
                    break
                sent += 1
                if sent % 100 == 0 and sessions() == 0:
                    break
            deadline = time.time() + 20
            while sessions() and time.time() < deadline:
                time.sleep(0.1)
            assert sessions() == 0, f"session still open after {sent} unread replies"
            assert sent < 20000
            # what the client finally reads: the replies that fitted in the sockets, then the end
            received = 0
            with pytest.raises(ConnectionClosed) as closed:
                for _ in range(20000):
                    ws.recv(timeout=10)
                    received += 1
            assert received < sent  # not every reply: the session ended instead of queueing them
            assert closed.value.rcvd is None or closed.value.rcvd.code == 1008
        # the server itself goes on: a new session starts and answers
        with connect(f"ws://127.0.0.1:{port}/v1/realtime") as again:
            assert json.loads(again.recv())["type"] == "session.created"
    finally:
        server.should_exit = True
        thread.join(10)
