"""One realtime conversation over the WebSocket protocol of ``docs/protocol.md``.

``RealtimeSession`` is transport-free: ``handle(message)`` takes one client message
(text), and every server event goes out through the ``send`` coroutine it was given.
The FastAPI route in ``app.py`` only moves messages between the socket and this class,
so tests can drive a session directly too.

State, made explicit:
* ``settings``: the session object clients see (persona, voice, turn detection, ...);
* ``conv``: persona and history (a ``Session`` used for prompts only; decoding goes to
  the backend's shared runner);
* ``vad`` and ``held_audio``: server VAD, and the speech of an unfinished turn
  (semantic_vad) or of the manual buffer;
* ``pending``: user items not yet answered;
* ``response``: the reply being generated (at most one), and ``items``: assistant items
  that can still be truncated.

Turn work (features, ASR, turn detection, starting a response) runs in tasks that
take ``turn_lock`` in order, so audio keeps flowing into the VAD meanwhile and
barge-in is noticed while a reply is being prepared or spoken.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import math
import re
import time
import traceback
from dataclasses import dataclass

import numpy as np

from ..duplex.turn import UNFINISHED, WAIT
from ..duplex.vad import SAMPLE_RATE, SpeechStarted, SpeechStopped, StreamingVAD, VADConfig
from ..engine.engine import EngineError
from ..engine.reply import AudioChunk, ReplyStream, TextDelta
from ..engine.session import Persona, Turn
from .backend import Backend

GA_NAMES = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
}
CLIENT_EVENTS = ("session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
                 "input_audio_buffer.clear", "conversation.item.create", "response.create", "response.cancel",
                 "conversation.item.truncate")
TURN_DETECTION_KEYS = {"type", "threshold", "silence_duration_ms", "min_speech_duration_ms", "prefix_padding_ms",
                       "create_response", "interrupt_response", "interrupt_min_speech_ms", "eagerness"}
MAX_HELD_SECONDS = 120.0  # manual buffer / unfinished turn
MAX_PENDING_ITEMS = 16  # user items waiting for a response
KEEP_ITEMS = 8  # assistant items that can still be truncated
# voices OpenAI clients send by default: they mean "the server's default voice" here, not an error
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar", "fable",
                 "onyx", "nova"}


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass
class UserItem:
    id: str
    text: str | None = None
    audio: np.ndarray | None = None  # 16 kHz float32
    transcript: str | None = None


@dataclass
class AssistantItem:
    id: str
    reply: ReplyStream
    turn: Turn | None = None  # its entry in the history, once the response ended
    audio_ms_sent: float = 0.0
    first_audio_at: float | None = None  # monotonic time of the first audio delta

    def played_ms(self, now: float) -> float:
        """The server's play-out estimate: real time since the first delta, up to what was sent."""
        if self.first_audio_at is None:
            return 0.0
        return min(self.audio_ms_sent, (now - self.first_audio_at) * 1000.0)


@dataclass
class Response:
    id: str
    item: AssistantItem
    task: asyncio.Task | None = None
    ticket: object = None
    cancel_reason: str | None = None
    heard_ms: float | None = None  # the play-out estimate frozen when the response was interrupted
    user_turn: Turn | None = None


class RealtimeSession:
    def __init__(self, backend: Backend, send, event_names: str = "beta"):
        cfg = backend.config
        self.backend, self._send = backend, send
        self.id = f"sess_{next(_ids)}"
        self.started = time.monotonic()
        self.settings = {
            "instructions": cfg.instructions,
            "role_description": cfg.role_description,
            "voice": None,
            "turn_detection": self._turn_detection_defaults(cfg.turn_detection),
            "input_audio_transcription": None,
            "max_response_steps": cfg.max_steps,
            "temperature": 0.0,  # greedy, as the reference
            "repetition_penalty": 1.1,  # the reference's, on codebook 0 of recent audio steps
            "event_names": event_names,
        }
        self.conv = backend.conversation(backend.persona(cfg.instructions, cfg.role_description))
        self.vad: StreamingVAD | None = None
        self._silero = None  # this session's own Silero model (it keeps per-stream state); set by start()
        self.held_audio: list[np.ndarray] = []  # manual buffer, or an unfinished turn's earlier segments
        self.held_samples = 0
        self.samples_in = 0  # all 16 kHz samples received
        self.speech_item: str | None = None  # the user item the VAD is hearing
        self.interrupted_this_speech = False
        self.pending: list[UserItem] = []
        self.response: Response | None = None
        self.items: dict[str, AssistantItem] = {}
        self.last_item_id: str | None = None
        self.last_assistant_id: str | None = None  # the reply that may still be playing
        self.vad_offset = 0  # samples received before the current VAD started (its positions start at 0)
        self.turn_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()
        self.closed = False

    # -- sending -----------------------------------------------------------------------
    async def send(self, event: dict) -> None:
        if self.closed:
            return
        if self.settings["event_names"] == "ga":
            event["type"] = GA_NAMES.get(event["type"], event["type"])
        event = {"type": event.pop("type"), "event_id": f"event_{next(_ids)}", **event}
        await self._send(event)

    async def error(self, code: str, message: str, param: str | None = None, client_event_id=None) -> None:
        await self.send({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message,
                                                    "param": param, "event_id": client_event_id}})

    async def start(self) -> None:
        self._silero = await self.backend.take_vad_model()
        self._make_vad()
        await self.send({"type": "session.created", "session": self.session_object()})

    def session_object(self) -> dict:
        b = self.backend
        return {"id": self.id, "object": "realtime.session", "model": "qinyu", "model_dir": str(b.model_dir),
                "modalities": ["text", "audio"] if b.codec is not None else ["text"],
                "input_audio_format": "pcm16", "output_audio_format": "pcm16",
                "input_audio_sample_rate": SAMPLE_RATE, "output_audio_sample_rate": b.output_sample_rate,
                **self.settings}

    # -- receiving ---------------------------------------------------------------------
    async def handle(self, message) -> None:
        """One client message. Bad input -> an ``error`` event; the session stays usable."""
        event_id = None
        try:
            if isinstance(message, (bytes, bytearray)):
                raise ProtocolError("invalid_event", "binary frames are not part of the protocol: send JSON text "
                                    "events (audio goes base64 inside input_audio_buffer.append)")
            limit = self.backend.config.max_event_bytes
            size = len(message) if len(message) * 4 <= limit else len(message.encode("utf-8", "surrogatepass"))
            if size > limit:
                raise ProtocolError("event_too_large", f"event of {size} bytes exceeds max_event_bytes "
                                    f"{limit}; send audio in smaller appends")
            try:
                event = json.loads(message)
            except (ValueError, RecursionError) as e:  # JSONDecodeError, and ints beyond Python's digit limit
                raise ProtocolError("invalid_json", f"event is not valid JSON: {e}") from None
            if not isinstance(event, dict):
                raise ProtocolError("invalid_event", f"an event must be a JSON object, got {type(event).__name__}")
            event_id = event.get("event_id") if isinstance(event.get("event_id"), (str, int)) else None
            kind = event.get("type")
            if not isinstance(kind, str):
                raise ProtocolError("invalid_event", "event has no string 'type'", "type")
            if kind not in CLIENT_EVENTS:
                raise ProtocolError("unknown_event", f"unknown event type {kind[:80]!r}; known: {list(CLIENT_EVENTS)}",
                                    "type")
            await getattr(self, "on_" + kind.replace(".", "_"))(event)
        except ProtocolError as e:
            await self.error(e.code, e.message, e.param, event_id)
        except Exception as e:  # a bug must not end the session: say so and carry on
            traceback.print_exc()
            await self.error("server_error", f"{type(e).__name__}: {e}", None, event_id)

    # -- session.update ----------------------------------------------------------------
    async def on_session_update(self, event: dict) -> None:
        s = event.get("session")
        if not isinstance(s, dict):
            raise ProtocolError("invalid_event", "session.update needs a 'session' object", "session")
        new = dict(self.settings)
        if s.get("type") == "realtime":  # a GA-shaped update: the client speaks the current names
            new["event_names"] = "ga"
            audio = s.get("audio") if isinstance(s.get("audio"), dict) else {}
            a_in = audio.get("input") if isinstance(audio.get("input"), dict) else {}
            a_out = audio.get("output") if isinstance(audio.get("output"), dict) else {}
            s = dict(s)
            if "turn_detection" in a_in and "turn_detection" not in s:
                s["turn_detection"] = a_in["turn_detection"]
            if "transcription" in a_in and "input_audio_transcription" not in s:
                s["input_audio_transcription"] = a_in["transcription"]
            if "voice" in a_out and "voice" not in s:
                s["voice"] = a_out["voice"]
        if "event_names" in s:
            if s["event_names"] not in ("beta", "ga"):
                raise ProtocolError("invalid_event", "session.event_names must be 'beta' or 'ga'", "session.event_names")
            new["event_names"] = s["event_names"]
        for key in ("instructions", "role_description"):
            if key in s:
                if s[key] is not None and not isinstance(s[key], str):
                    raise ProtocolError("invalid_event", f"session.{key} must be a string or null", f"session.{key}")
                if isinstance(s[key], str) and len(s[key]) > 4000:
                    raise ProtocolError("invalid_event", f"session.{key} is longer than 4000 characters",
                                        f"session.{key}")
                new[key] = s[key]
        if "max_response_steps" in s:
            n = s["max_response_steps"]
            top = self.backend.config.max_steps
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top:
                raise ProtocolError("invalid_event", f"session.max_response_steps must be an integer in 1..{top}",
                                    "session.max_response_steps")
            new["max_response_steps"] = n
        for key, low, high in (("temperature", 0.0, 2.0), ("repetition_penalty", 0.5, 2.0)):
            if key in s:
                v = s[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
                    raise ProtocolError("invalid_event", f"session.{key} must be a number in [{low}, {high}]",
                                        f"session.{key}")
                new[key] = float(v)
        if "input_audio_transcription" in s:
            t = s["input_audio_transcription"]
            if isinstance(t, dict) and isinstance(t.get("model"), str) and t["model"] not in ("slm", "whisper"):
                # an SDK's transcription model name (whisper-1, gpt-4o-transcribe, ...): the closest one here
                t = {**t, "model": "whisper" if self.backend.whisper is not None else "slm"}
            if t is not None and (not isinstance(t, dict) or t.get("model", "slm") not in ("slm", "whisper")):
                raise ProtocolError("invalid_event", "session.input_audio_transcription must be null or "
                                    "{'model': 'slm' | 'whisper'}", "session.input_audio_transcription")
            if t is not None and t.get("model") == "whisper" and self.backend.whisper is None:
                raise ProtocolError("invalid_event", "this server has no Whisper model configured (server config "
                                    "asr: {type: whisper, path: DIR}); use {'model': 'slm'}",
                                    "session.input_audio_transcription")
            new["input_audio_transcription"] = None if t is None else {"model": t.get("model", "slm")}
        if "turn_detection" in s:
            new["turn_detection"] = self._parse_turn_detection(s["turn_detection"])
        voice = self.conv.persona.voice
        if isinstance(s.get("voice"), str) and s["voice"].lower() in OPENAI_VOICES and s["voice"] not in \
                {v.name for v in self.backend.voices.list()}:
            s = {**s, "voice": None}  # an SDK's default voice name: use the server's default voice
        if "voice" in s and s["voice"] is not None:
            if not isinstance(s["voice"], str):
                raise ProtocolError("invalid_event", "session.voice must be a voice name or id", "session.voice")
            from ..voice.library import VoiceError

            try:
                voice = self.backend.voices.get(s["voice"]).vector
            except VoiceError as e:
                raise ProtocolError("unknown_voice", str(e), "session.voice") from None
            new["voice"] = s["voice"]
        elif "voice" in s:
            voice, new["voice"] = None, None
        if s.get("role_description") and "voice" not in s and self.backend.timbre is not None:
            # a described character gets a designed voice (the reference web demo's role-play)
            voice = await asyncio.to_thread(self.backend.timbre.generate, s["role_description"])
            new["voice"] = None
        # everything checked: apply
        detection_changed = new["turn_detection"] != self.settings["turn_detection"]
        self.settings = new
        self.conv.persona = self.backend.persona(new["instructions"], new["role_description"], voice)
        self.conv.params.max_steps = new["max_response_steps"]
        self.conv.params.temperature = new["temperature"]
        self.conv.params.repetition_penalty = new["repetition_penalty"]
        if detection_changed:
            self._make_vad()
        await self.send({"type": "session.updated", "session": self.session_object()})

    def _turn_detection_defaults(self, kind: str | None) -> dict | None:
        cfg = self.backend.config
        if kind is None:
            return None
        return {"type": kind, "threshold": cfg.vad_threshold, "silence_duration_ms": cfg.min_silence_ms,
                "min_speech_duration_ms": cfg.min_speech_ms, "prefix_padding_ms": cfg.speech_pad_ms,
                "create_response": True, "interrupt_response": True,
                "interrupt_min_speech_ms": cfg.interrupt_min_speech_ms}

    def _parse_turn_detection(self, t) -> dict | None:
        if t is None:
            return None
        if not isinstance(t, dict):
            raise ProtocolError("invalid_event", "session.turn_detection must be null or an object",
                                "session.turn_detection")
        unknown = sorted(set(t) - TURN_DETECTION_KEYS)
        if unknown:
            raise ProtocolError("invalid_event", f"session.turn_detection has unknown field(s) {unknown}",
                                "session.turn_detection")
        kind = t.get("type", "server_vad")
        if kind not in ("server_vad", "semantic_vad"):
            raise ProtocolError("invalid_event", f"turn_detection.type must be 'server_vad' or 'semantic_vad', "
                                f"got {kind!r}", "session.turn_detection.type")
        out = self._turn_detection_defaults(kind)
        for key in ("silence_duration_ms", "min_speech_duration_ms", "prefix_padding_ms", "interrupt_min_speech_ms"):
            if key in t:
                v = t[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 10000:
                    raise ProtocolError("invalid_event", f"turn_detection.{key} must be a number of ms in 0..10000",
                                        f"session.turn_detection.{key}")
                out[key] = v
        if out["silence_duration_ms"] <= 0:
            raise ProtocolError("invalid_event", "turn_detection.silence_duration_ms must be > 0",
                                "session.turn_detection.silence_duration_ms")
        if "threshold" in t:
            v = t["threshold"]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.15 < v < 1:
                raise ProtocolError("invalid_event", "turn_detection.threshold must be in (0.15, 1)",
                                    "session.turn_detection.threshold")
            out["threshold"] = float(v)
        for key in ("create_response", "interrupt_response"):
            if key in t:
                if not isinstance(t[key], bool):
                    raise ProtocolError("invalid_event", f"turn_detection.{key} must be true or false",
                                        f"session.turn_detection.{key}")
                out[key] = t[key]
        return out

    def _make_vad(self) -> None:
        self.vad_offset = self.samples_in
        t = self.settings["turn_detection"]
        if t is None:
            self.vad = None
            return
        self.vad = StreamingVAD(VADConfig(threshold=t["threshold"], min_speech_s=t["min_speech_duration_ms"] / 1000,
                                          min_silence_s=t["silence_duration_ms"] / 1000,
                                          pad_s=t["prefix_padding_ms"] / 1000),
                                model=self._silero)

    # -- audio in ----------------------------------------------------------------------
    async def on_input_audio_buffer_append(self, event: dict) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("invalid_audio", "input_audio_buffer.append needs 'audio': base64 PCM16 16 kHz mono",
                                "audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_audio", "input_audio_buffer.append: 'audio' is not valid base64",
                                "audio") from None
        if len(raw) % 2:
            raise ProtocolError("invalid_audio", f"input_audio_buffer.append: {len(raw)} bytes is not whole 16-bit "
                                "samples", "audio")
        pcm = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
        self.samples_in += len(pcm)
        if self.vad is None:  # manual turns: collect until commit
            self._hold(pcm)
            return
        # a typical 20-100 ms append is one to three 32 ms Silero windows (~1 ms): scored inline, since a
        # thread hop per append costs more under load than it saves; long appends go to a worker thread
        windows = (len(self.vad.pending) + len(pcm)) // 512
        events = self.vad.push(pcm) if windows <= 4 else await asyncio.to_thread(self.vad.push, pcm)
        for e in events:
            if isinstance(e, SpeechStarted):
                self.speech_item = f"item_{next(_ids)}"
                self.interrupted_this_speech = False
                await self.send({"type": "input_audio_buffer.speech_started", "item_id": self.speech_item,
                                 "audio_start_ms": _ms(self.vad_offset + e.sample)})
            elif isinstance(e, SpeechStopped):
                item_id, self.speech_item = self.speech_item or f"item_{next(_ids)}", None
                await self.send({"type": "input_audio_buffer.speech_stopped", "item_id": item_id,
                                 "audio_end_ms": _ms(self.vad_offset + e.sample)})
                t = self.settings["turn_detection"]
                if (t["type"] == "server_vad" and t["interrupt_response"] and not self.interrupted_this_speech
                        and self._assistant_audible()
                        and len(e.audio) < t["interrupt_min_speech_ms"] / 1000 * SAMPLE_RATE):
                    # too short to interrupt the assistant: a cough or a backchannel, not a turn (semantic_vad
                    # lets the turn detector judge it instead: a short "stop" is a wait)
                    continue
                self._spawn(self._end_of_speech(item_id, e.audio))
        await self._maybe_barge_in()

    def _hold(self, pcm: np.ndarray) -> None:
        if self.held_samples + len(pcm) > MAX_HELD_SECONDS * SAMPLE_RATE:
            raise ProtocolError("invalid_state", f"the input audio buffer holds more than {MAX_HELD_SECONDS:.0f} s; "
                                "commit or clear it")
        self.held_audio.append(pcm)
        self.held_samples += len(pcm)

    def _take_held(self) -> np.ndarray | None:
        audio = np.concatenate(self.held_audio) if self.held_audio else None
        self.held_audio, self.held_samples = [], 0
        return audio

    async def _maybe_barge_in(self) -> None:
        t = self.settings["turn_detection"]
        v = self.vad
        if not (t and t["interrupt_response"] and v is not None and v.speaking) or self.interrupted_this_speech:
            return
        if (v.position - v.start) < t["interrupt_min_speech_ms"] / 1000 * SAMPLE_RATE:
            return
        if self._assistant_audible():
            self.interrupted_this_speech = True
            await self.interrupt("turn_detected")

    def _assistant_audible(self) -> bool:
        """A reply is generating, or its audio may still be playing at the client."""
        if self.response is not None:
            return True
        item = self.items.get(self.last_assistant_id) if self.last_assistant_id else None
        return item is not None and item.played_ms(time.monotonic()) < item.audio_ms_sent

    async def interrupt(self, reason: str) -> None:
        """Barge-in: stop generating, tell the client to drop queued audio, keep only what was heard."""
        response = self.response
        if response is not None:
            if response.cancel_reason is None:  # the first interruption decides what was heard
                response.cancel_reason = reason
                response.heard_ms = response.item.played_ms(time.monotonic())
            if response.ticket is not None:
                self.backend.runner.cancel(response.ticket)  # queued or decoding: both end promptly
            await self.send({"type": "output_audio_buffer.cleared", "response_id": response.id, "reason": reason})
            if response.task is not None:  # the response ends itself (response.done); bounded, to stay responsive
                await asyncio.wait({response.task}, timeout=5.0)
            return
        item = self.items.get(self.last_assistant_id) if self.last_assistant_id else None
        if item is not None and item.turn is not None:
            self._truncate(item, item.played_ms(time.monotonic()))
        await self.send({"type": "output_audio_buffer.cleared", "response_id": None, "reason": reason})

    # -- turns -------------------------------------------------------------------------
    async def _end_of_speech(self, item_id: str, segment: np.ndarray) -> None:
        async with self.turn_lock:
            t = self.settings["turn_detection"]
            if self.held_audio:  # the earlier, unfinished part of this turn
                segment = np.concatenate(self.held_audio + [segment])
                self.held_audio, self.held_samples = [], 0
            if t is not None and t["type"] == "semantic_vad":
                text = await self._transcribe(segment)
                decision = await asyncio.to_thread(self.backend.turn_detector.decide, text, len(segment) / SAMPLE_RATE)
                if decision == UNFINISHED:
                    self._hold(segment)
                    return
                if decision == WAIT:
                    if self._assistant_audible():
                        await self.interrupt("wait")
                    return
                item = UserItem(item_id, audio=segment, transcript=text)
            else:
                item = UserItem(item_id, audio=segment)
            await self._commit(item)
            if t is not None and t["create_response"]:
                if self.response is not None:
                    if not t["interrupt_response"]:
                        return  # the reply in progress goes on; this turn waits for the next response
                    await self.interrupt("turn_detected")  # the user spoke again: the new turn wins
                await self._start_response()
            if item.transcript is None and self.settings["input_audio_transcription"]:
                self._spawn(self._send_transcript(item))
            elif item.transcript is not None and self.settings["input_audio_transcription"]:
                await self._transcript_event(item)

    async def _commit(self, item: UserItem) -> None:
        if len(self.pending) >= MAX_PENDING_ITEMS:
            raise ProtocolError("invalid_state", f"{MAX_PENDING_ITEMS} user items are waiting for a response; "
                                "send response.create (or clear them by starting a response)")
        self.pending.append(item)
        await self.send({"type": "input_audio_buffer.committed", "previous_item_id": self.last_item_id,
                         "item_id": item.id})
        content = ({"type": "input_audio", "transcript": item.transcript} if item.audio is not None
                   else {"type": "input_text", "text": item.text})
        await self.send({"type": "conversation.item.created", "previous_item_id": self.last_item_id,
                         "item": {"id": item.id, "type": "message", "role": "user", "content": [content]}})
        self.last_item_id = item.id

    async def _transcribe(self, audio: np.ndarray) -> str:
        t = self.settings["input_audio_transcription"]
        try:
            return await self.backend.transcribe(audio, use_whisper=bool(t and t.get("model") == "whisper"))
        except (EngineError, ValueError) as e:
            await self.send({"type": "conversation.item.input_audio_transcription.failed", "content_index": 0,
                             "error": {"type": "transcription_error", "code": "transcription_failed",
                                       "message": f"could not transcribe the user's speech: {e}"}})
            return ""

    async def _send_transcript(self, item: UserItem) -> None:
        item.transcript = await self._transcribe(item.audio)
        await self._transcript_event(item)

    async def _transcript_event(self, item: UserItem) -> None:
        await self.send({"type": "conversation.item.input_audio_transcription.completed", "item_id": item.id,
                         "content_index": 0, "transcript": item.transcript})

    async def on_input_audio_buffer_commit(self, event: dict) -> None:
        if self.vad is not None:
            if not self.vad.speaking:
                raise ProtocolError("invalid_state", "input_audio_buffer.commit: no speech in the buffer (server VAD "
                                    "commits by itself at the end of speech)")
            v = self.vad
            segment = v.history[v.start - v.history_start:].copy()
            item_id = self.speech_item or f"item_{next(_ids)}"
            self._make_vad()
            self.speech_item = None
            self._spawn(self._end_of_speech(item_id, segment))
            return
        audio = self._take_held()
        if audio is None or len(audio) < SAMPLE_RATE // 10:
            raise ProtocolError("invalid_state", "input_audio_buffer.commit: the buffer holds less than 100 ms of audio")
        item = UserItem(f"item_{next(_ids)}", audio=audio)
        async with self.turn_lock:
            await self._commit(item)
        if self.settings["input_audio_transcription"]:
            self._spawn(self._send_transcript(item))

    async def on_input_audio_buffer_clear(self, event: dict) -> None:
        self.held_audio, self.held_samples = [], 0
        if self.vad is not None:
            self._make_vad()
        await self.send({"type": "input_audio_buffer.cleared"})

    async def on_conversation_item_create(self, event: dict) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("role", "user") != "user" or item.get("type", "message") != "message":
            raise ProtocolError("invalid_event", "conversation.item.create takes a user message item", "item")
        content = item.get("content")
        if not isinstance(content, list) or not content or not all(isinstance(c, dict) for c in content):
            raise ProtocolError("invalid_event", "item.content must be a non-empty list of parts", "item.content")
        texts = []
        for c in content:
            if c.get("type") not in ("input_text", "text") or not isinstance(c.get("text"), str):
                raise ProtocolError("invalid_event", "item.content parts must be {'type': 'input_text', 'text': ...}",
                                    "item.content")
            texts.append(c["text"])
        text = " ".join(texts).strip()
        if not text or len(text) > 4000:
            raise ProtocolError("invalid_event", "item text must be 1..4000 characters", "item.content")
        try:
            self.conv.user_turn(text=text)  # rejects control-token strings now, not when the reply starts
        except ValueError as e:
            raise ProtocolError("invalid_event", f"conversation.item.create: {e}", "item.content") from None
        async with self.turn_lock:
            given = item.get("id")
            if given is not None and (not isinstance(given, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", given)
                                      or given in self.items or given.startswith("item_")):
                raise ProtocolError("invalid_event", "item.id must be 1-64 letters, digits or _.:- and not start "
                                    "with 'item_' (the server's own ids)", "item.id")
            await self._commit(UserItem(given or f"item_{next(_ids)}", text=text))

    # -- responses ---------------------------------------------------------------------
    async def on_response_create(self, event: dict) -> None:
        r = event.get("response")
        if r is not None and not isinstance(r, dict):
            raise ProtocolError("invalid_event", "response.create: 'response' must be an object", "response")
        instructions = (r or {}).get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise ProtocolError("invalid_event", "response.instructions must be a string", "response.instructions")
        async with self.turn_lock:
            if self.response is not None:
                raise ProtocolError("response_in_progress", "a response is already in progress; cancel it first")
            if not self.pending:
                raise ProtocolError("invalid_state", "response.create: there is no user input to answer")
            await self._start_response(instructions)

    async def _start_response(self, instructions: str | None = None) -> None:
        """Called holding turn_lock: the pending user items become one turn and a reply starts."""
        items, self.pending = self.pending, []
        texts = [i.text for i in items if i.text]
        audios = [i.audio for i in items if i.audio is not None]
        audio = np.concatenate(audios) if audios else None
        try:
            turn = await asyncio.to_thread(self.conv.user_turn, " ".join(texts) or None,
                                           (audio, SAMPLE_RATE) if audio is not None else None)
            persona = self.conv.persona
            if instructions is not None:
                self.conv.persona = Persona(system=instructions, role_description=persona.role_description,
                                            voice=persona.voice)
            try:
                request = self.conv.request(turn)
            finally:
                self.conv.persona = persona
        except (EngineError, ValueError) as e:
            raise ProtocolError("invalid_state", f"cannot answer this input: {e}") from None
        item = AssistantItem(f"item_{next(_ids)}", self.backend.reply_stream())
        response = Response(f"resp_{next(_ids)}", item, user_turn=turn)
        self.response = response
        self.items[item.id] = item
        for old in list(self.items)[:-KEEP_ITEMS]:  # only recent replies can still be truncated
            del self.items[old]
        previous, self.last_item_id, self.last_assistant_id = self.last_item_id, item.id, item.id
        message = {"id": item.id, "object": "realtime.item", "type": "message", "role": "assistant",
                   "status": "in_progress", "content": []}
        await self.send({"type": "response.created", "response": {"id": response.id, "object": "realtime.response",
                                                                 "status": "in_progress", "output": []}})
        await self.send({"type": "response.output_item.added", "response_id": response.id, "output_index": 0,
                         "item": message})
        await self.send({"type": "conversation.item.created", "previous_item_id": previous, "item": message})
        await self.send({"type": "response.content_part.added", "response_id": response.id, "item_id": item.id,
                         "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
        response.task = asyncio.create_task(self._run_response(response, request))

    async def _run_response(self, response: Response, request) -> None:
        item, reply = response.item, response.item.reply
        ids = {"response_id": response.id, "item_id": item.id, "output_index": 0, "content_index": 0}
        status, details, ticket = "completed", None, None

        def submitted(t):  # the ticket exists from submission on, so an interruption can cancel a queued request
            response.ticket = t

        try:
            async for ticket, outputs in self.backend.stream(request, on_submit=submitted):
                if response.cancel_reason:  # interrupted: nothing more is decoded or sent
                    self.backend.runner.cancel(ticket)
                    break
                await self._send_reply_events(await self.backend.feed(reply, outputs), ids, item)
            if not response.cancel_reason:
                await self._send_reply_events(await asyncio.to_thread(reply.finish), ids, item)
            if response.cancel_reason:  # even if the engine had already finished: what was heard is what counts
                status, details = "cancelled", {"type": "cancelled", "reason": response.cancel_reason}
            elif reply.finished == "cancelled":
                status, details = "cancelled", {"type": "cancelled", "reason": response.cancel_reason or "cancelled"}
            elif reply.finished == "length":
                status, details = "incomplete", {"type": "incomplete", "reason": "max_response_steps"}
        except asyncio.CancelledError:
            status, details = "cancelled", {"type": "cancelled", "reason": "session_closed"}
            raise
        except Exception as e:
            traceback.print_exc()
            status, details = "failed", {"type": "failed", "error": {"code": "server_error", "message": str(e)}}
        finally:
            if not self.closed:
                # history: the user turn, and what of the reply was heard (a failed reply leaves no trace,
                # so the same input can be tried again)
                if status == "cancelled":
                    heard_ms = response.heard_ms if response.heard_ms is not None else item.played_ms(time.monotonic())
                    heard = self._heard(item, heard_ms)
                else:
                    heard = reply.text
                item.turn = Turn("assistant", heard)
                if status != "failed":
                    self.conv.history += [response.user_turn, item.turn]
                    del self.conv.history[:-2 * max(self.conv.max_history, 1)]  # only the rendered window is kept
                if self.response is response:
                    self.response = None
                state = getattr(ticket, "state", None)
                usage = {"decode_steps": getattr(state, "num_steps", None),
                         "invalid_codes": getattr(state, "invalid_codes", None),
                         "audio_ms": round(item.audio_ms_sent)}
                await self.send({"type": "response.audio_transcript.done", **ids, "transcript": reply.text})
                await self.send({"type": "response.audio.done", **ids})
                await self.send({"type": "response.content_part.done", **ids,
                                 "part": {"type": "audio", "transcript": heard}})
                output = {"id": item.id, "object": "realtime.item", "type": "message", "role": "assistant",
                          "status": "completed" if status == "completed" else "incomplete",
                          "content": [{"type": "audio", "transcript": heard}]}
                await self.send({"type": "response.output_item.done", "response_id": response.id, "output_index": 0,
                                 "item": output})
                await self.send({"type": "response.done", "response": {
                    "id": response.id, "object": "realtime.response", "status": status, "status_details": details,
                    "output": [output], "usage": usage}})

    async def _send_reply_events(self, events, ids: dict, item: AssistantItem) -> None:
        for e in events:
            if isinstance(e, TextDelta):
                await self.send({"type": "response.audio_transcript.delta", **ids, "delta": e.text})
            elif isinstance(e, AudioChunk):
                pcm16 = (np.clip(e.pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
                if item.first_audio_at is None:
                    item.first_audio_at = time.monotonic()
                item.audio_ms_sent += 1000.0 * len(e.pcm) / e.sample_rate
                await self.send({"type": "response.audio.delta", **ids,
                                 "delta": base64.b64encode(pcm16).decode("ascii")})

    def _heard(self, item: AssistantItem, played_ms: float) -> str:
        if self.backend.codec is None:  # no audio: the client showed all the text
            return item.reply.text
        return item.reply.text_heard(played_ms, self.backend.frame_rate)

    def _truncate(self, item: AssistantItem, audio_end_ms: float) -> None:
        if self.backend.codec is not None and item.turn is not None:
            item.turn.text = item.reply.text_heard(audio_end_ms, self.backend.frame_rate)

    async def on_response_cancel(self, event: dict) -> None:
        if self.response is None:
            raise ProtocolError("invalid_state", "response.cancel: no response in progress")
        await self.interrupt("client_cancelled")

    async def on_conversation_item_truncate(self, event: dict) -> None:
        item_id, end = event.get("item_id"), event.get("audio_end_ms")
        if not isinstance(item_id, str) or item_id not in self.items:
            raise ProtocolError("invalid_state", f"conversation.item.truncate: no assistant item {str(item_id)[:64]!r}",
                                "item_id")
        if isinstance(end, bool) or not isinstance(end, (int, float)) or not math.isfinite(end) or end < 0:
            raise ProtocolError("invalid_event", "conversation.item.truncate: audio_end_ms must be a number >= 0",
                                "audio_end_ms")
        if event.get("content_index", 0) != 0:
            raise ProtocolError("invalid_event", "conversation.item.truncate: content_index must be 0", "content_index")
        item = self.items[item_id]
        if end > item.audio_ms_sent + 1:
            raise ProtocolError("invalid_event", f"audio_end_ms {end} is beyond the {item.audio_ms_sent:.0f} ms of "
                                "audio sent for this item", "audio_end_ms")
        if self.response is not None and self.response.item is item:  # the client stopped playing it
            await self.interrupt("truncated")
        self._truncate(item, float(end))
        await self.send({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": end})

    # -- lifetime ----------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guard(self, coro) -> None:
        try:
            await coro
        except ProtocolError as e:
            await self.error(e.code, e.message, e.param)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            traceback.print_exc()
            await self.error("server_error", f"{type(e).__name__}: {e}")

    async def close(self) -> None:
        if self.response is not None and self.response.ticket is not None:
            self.backend.runner.cancel(self.response.ticket)
        self.closed = True
        self.backend.give_back_vad_model(self._silero)
        self._silero, self.vad = None, None
        pending = list(self.tasks) + ([self.response.task] if self.response and self.response.task else [])
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


_ids = itertools.count(1)


def _ms(sample: int) -> int:
    return int(round(sample * 1000 / SAMPLE_RATE))


