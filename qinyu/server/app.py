"""The qinyu HTTP server (FastAPI). One model is loaded once; every request and every
realtime session decodes through the backend's shared, batched engine.

    GET    /                          the web page (microphone, playback, transcript)
    WS     /v1/realtime               the realtime protocol (docs/protocol.md)
    GET    /health                    -> {"status": "ok", "model", "sample_rate", "sessions", ...}
    POST   /v1/audio/speech           {"input": text, "voice": name?} -> audio/wav
    POST   /v1/audio/transcriptions   multipart "file" -> {"text": ...}
    GET    /v1/voices                 -> {"voices": [...]}
    POST   /v1/voices                 {"name", "vector": [192 floats]} | {"name", "description"} | multipart clip
    DELETE /v1/voices/{name}
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile, WebSocket
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect

from ..engine.engine import EngineError
from .backend import Backend
from .config import ServerConfig
from .realtime import RealtimeSession

STATIC = Path(__file__).parent / "static"
KEY_SUBPROTOCOL = "openai-insecure-api-key."


class SpeechRequest(BaseModel):
    input: str = Field(min_length=1, max_length=4000)
    voice: str | None = None
    response_format: str = "wav"


class VoiceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    vector: list[float] | None = None
    description: str | None = Field(default=None, max_length=2000)


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(pcm, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


MAX_UPLOAD_SECONDS = 300.0


def read_upload_audio(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode an uploaded clip; its length is checked from the header first (a few hundred KB
    of compressed silence can decode to gigabytes). Call it off the event loop."""
    import soundfile as sf

    from ..audio.io import AudioError, check_waveform

    try:
        info = sf.info(io.BytesIO(data))
        if info.frames / max(info.samplerate, 1) > MAX_UPLOAD_SECONDS or info.channels > 8:
            raise HTTPException(413, f"audio {name!r} is {info.frames / max(info.samplerate, 1):.0f} s with "
                                f"{info.channels} channel(s); the limit is {MAX_UPLOAD_SECONDS:.0f} s and 8 channels")
        wav, sr = sf.read(io.BytesIO(data), dtype="float32")
        return check_waveform(wav, sr, name), sr
    except (RuntimeError, sf.LibsndfileError, AudioError, ValueError) as e:
        raise HTTPException(400, f"cannot read audio {name!r}: {e}") from None


def _key_matches(given: str | None, key: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), key.encode())


def _given_key(headers, query_params) -> str | None:
    """The API key a client sent: ``Authorization: Bearer KEY`` or ``?api_key=KEY``."""
    auth = headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else query_params.get("api_key")


def _origin_refused(config: ServerConfig, origin: str | None) -> bool:
    """A browser origin outside ``allowed_origins`` (requests without an Origin are not browsers)."""
    return config.allowed_origins is not None and origin is not None and origin not in config.allowed_origins


def create_app(model_dir, library=None, timbre=None, max_steps: int | None = None, config: ServerConfig | None = None,
               max_upload_bytes: int = 25 << 20) -> FastAPI:
    config = config or ServerConfig()
    if library is not None:
        config.library = str(library)
    if max_steps is not None:
        config.max_steps = max_steps
    backend = Backend(model_dir, config, timbre=timbre)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        backend.close()

    app = FastAPI(title="qinyu", version="0.1.0", lifespan=lifespan)
    app.state.backend = backend

    def require_key(request: Request):
        origin = request.headers.get("origin")
        if _origin_refused(config, origin):
            raise HTTPException(403, f"origin {origin} is not allowed by this server")
        if config.api_key is None:
            return
        if not _key_matches(_given_key(request.headers, request.query_params), config.api_key):
            raise HTTPException(401, "missing or wrong API key (send 'Authorization: Bearer KEY')")

    # -- the page and health ---------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    def health():
        decoding, waiting = backend.runner.load
        alive = backend.runner.alive
        return {"status": "ok" if alive else "engine stopped", "model": str(Path(model_dir)), "trained": bool(backend.model.config.trained),
                "sample_rate": backend.output_sample_rate, "sessions": backend.sessions,
                "max_sessions": config.max_sessions, "decoding": decoding, "waiting": waiting,
                "api_key_required": config.api_key is not None}

    # -- REST --------------------------------------------------------------------------------
    @app.post("/v1/audio/speech", dependencies=[Depends(require_key)])
    async def speech(req: SpeechRequest):
        from ..voice.library import VoiceError

        if req.response_format != "wav":
            raise HTTPException(400, f"response_format {req.response_format!r} is not supported (use 'wav')")
        if backend.codec is None:
            raise HTTPException(503, "this checkpoint names no codec: it cannot speak")
        try:
            voice = backend.voices.get(req.voice).vector if req.voice else None
        except VoiceError as e:
            raise HTTPException(404, str(e)) from None
        try:
            audio = await backend.speak(req.input, voice)
        except EngineError as e:
            raise HTTPException(400, str(e)) from None
        return Response(wav_bytes(audio, backend.output_sample_rate), media_type="audio/wav")

    @app.post("/v1/audio/transcriptions", dependencies=[Depends(require_key)])
    async def transcriptions(file: UploadFile = File(...), model: str = Form("slm")):
        from ..audio.io import resample

        if model not in ("slm", "whisper"):
            raise HTTPException(400, f"model {model!r} is not available (use 'slm' or 'whisper')")
        if model == "whisper" and backend.whisper is None:
            raise HTTPException(400, "this server has no Whisper model configured")
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"audio file larger than {max_upload_bytes} bytes")
        wav, sr = await asyncio.to_thread(read_upload_audio, data, file.filename or "upload")
        try:
            wav = await asyncio.to_thread(resample, wav, sr, 16000)
            text = await backend.transcribe(wav, use_whisper=model == "whisper")
        except (EngineError, ValueError) as e:
            raise HTTPException(400, str(e)) from None
        return {"text": text}

    @app.get("/v1/voices", dependencies=[Depends(require_key)])
    def list_voices():
        return {"voices": [v.summary() for v in backend.voices.list()]}

    @app.post("/v1/voices", status_code=201, dependencies=[Depends(require_key)])
    async def create_voice(request: Request):
        """JSON {"name", "vector"} or {"name", "description"}, or multipart name + file (a clip)."""
        from ..voice.library import VoiceError

        try:
            if request.headers.get("content-type", "").startswith("multipart/"):
                form = await request.form()
                name, clip = form.get("name"), form.get("file")
                if not isinstance(name, str) or not name or clip is None or isinstance(clip, str):
                    raise HTTPException(400, "multipart voice creation needs 'name' and a 'file' (audio clip)")
                if backend.speaker_encoder is None:
                    raise HTTPException(400, "this checkpoint names no speaker encoder: voices from clips need one")
                data = await clip.read(max_upload_bytes + 1)
                if len(data) > max_upload_bytes:
                    raise HTTPException(413, f"audio file larger than {max_upload_bytes} bytes")
                wav, sr = await asyncio.to_thread(read_upload_audio, data, clip.filename or "clip")
                vector = await asyncio.to_thread(backend.speaker_encoder.embed, wav, sr)
                voice = backend.voices.add(name, vector, "clip", clip.filename or "upload")
            else:
                try:
                    req = VoiceCreate.model_validate(await request.json())
                except ValueError as e:
                    raise HTTPException(422, f"bad voice request: {e}") from None
                if req.vector is not None:
                    voice = backend.voices.add(req.name, np.asarray(req.vector, dtype=np.float32), "vector", "api")
                elif req.description:
                    if backend.timbre is None:
                        raise HTTPException(400, "the server has no text-to-timbre model (server config 'timbre')")
                    voice = await asyncio.to_thread(backend.voices.create_from_description, req.name,
                                                    req.description, backend.timbre)
                else:
                    raise HTTPException(400, "give a 'vector' (192 floats), a 'description', or a clip (multipart)")
        except VoiceError as e:
            raise HTTPException(400, str(e)) from None
        return voice.summary()

    @app.delete("/v1/voices/{name}", dependencies=[Depends(require_key)])
    def delete_voice(name: str):
        from ..voice.library import VoiceError

        try:
            return backend.voices.delete(name).summary()
        except VoiceError as e:
            raise HTTPException(404, str(e)) from None

    # -- realtime ----------------------------------------------------------------------------
    @app.websocket("/v1/realtime")
    async def realtime(ws: WebSocket):
        origin = ws.headers.get("origin")
        refused = None  # refusals are sent as an error event then a 1008 close, so clients can show why
        if _origin_refused(config, origin):
            refused = ("origin_not_allowed", f"origin {origin} is not allowed by this server")
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        if config.api_key is not None:
            given = _given_key(ws.headers, ws.query_params)
            for p in offered:
                if p.startswith(KEY_SUBPROTOCOL):
                    given = p[len(KEY_SUBPROTOCOL):]
            if refused is None and not _key_matches(given, config.api_key):
                refused = ("invalid_api_key", "missing or wrong API key (Authorization: Bearer KEY, ?api_key=KEY, "
                           "or the subprotocol openai-insecure-api-key.KEY)")
        # a browser that offered subprotocols fails the handshake unless one is chosen
        subprotocol = "realtime" if "realtime" in offered else (offered[0] if offered else None)
        await ws.accept(subprotocol=subprotocol)
        if refused is not None:
            await ws.send_json({"type": "error", "event_id": "event_0", "error": {
                "type": "invalid_request_error", "code": refused[0], "message": refused[1], "param": None,
                "event_id": None}})
            await ws.close(code=1008, reason=refused[0])
            return
        # the session's events wait here for the writer; a client that stops reading fills its
        # socket, the writer blocks and the queue grows, so past max_outbox_events the session ends
        outbox: asyncio.Queue = asyncio.Queue()
        writing = None
        stalled = False

        async def send(event: dict) -> None:
            nonlocal stalled
            if stalled:
                return  # the session is closing: nothing more reaches this client
            if outbox.qsize() >= config.max_outbox_events:
                stalled = True
                if writing is not None:
                    writing.cancel()  # ends the receive loop below, which closes the session
                return
            await outbox.put(event)

        event_names = "ga" if ws.query_params.get("event_names") == "ga" else "beta"
        session = RealtimeSession(backend, send, event_names=event_names)
        if backend.sessions >= config.max_sessions:
            await session.error("too_many_sessions", f"the server is at its limit of {config.max_sessions} sessions; "
                                "try again later")
            with contextlib.suppress(Exception):  # the client may already be gone
                await ws.send_json(outbox.get_nowait())
                await ws.close(code=1013, reason="too many sessions")
            return
        backend.live[session.id] = session

        async def writer():
            while True:
                event = await outbox.get()
                if event is None:
                    return
                await ws.send_json(event)

        async def expire():
            await asyncio.sleep(config.max_session_seconds)
            await session.error("session_expired", f"the session reached max_session_seconds "
                                f"({config.max_session_seconds:g} s)")
            await outbox.put(None)

        writing = asyncio.create_task(writer())
        expiry = asyncio.create_task(expire())
        receiving = None
        try:
            await session.start()
            while True:
                receiving = asyncio.create_task(ws.receive())
                done, _ = await asyncio.wait({receiving, writing}, return_when=asyncio.FIRST_COMPLETED)
                if receiving not in done:  # the writer ended: the session expired (or the socket broke)
                    break
                message = receiving.result()
                if message["type"] == "websocket.disconnect":
                    break
                await session.handle(message.get("text") if message.get("text") is not None else message.get("bytes"))
        except (WebSocketDisconnect, asyncio.CancelledError):
            # CancelledError: the server (or a test client) is tearing the connection down; the handler ends
            # here either way, after the clean-up below
            pass
        finally:
            backend.live.pop(session.id, None)
            for task in (expiry, writing, receiving):
                if task is not None:
                    task.cancel()
            try:
                await session.close()
                await asyncio.gather(writing, return_exceptions=True)
                with contextlib.suppress(Exception):
                    # a client that is not reading may never take the close frame either
                    await asyncio.wait_for(ws.close(code=1008, reason="client_not_reading") if stalled
                                           else ws.close(code=1000), timeout=5)
            except asyncio.CancelledError:
                pass  # cancelled again while cleaning up: the session's tasks were already told to stop

    return app


def run_server(model_dir, config: ServerConfig) -> None:
    """Load ``model_dir``, print where it is served, and serve until interrupted
    (``qinyu serve`` and ``make demo``)."""
    import uvicorn

    app = create_app(str(model_dir), config=config)
    print(f"qinyu serving {model_dir} at http://{config.host}:{config.port}/  (realtime: "
          f"ws://{config.host}:{config.port}/v1/realtime)", flush=True)
    # the socket may carry a bit more than max_event_bytes so an oversized event gets an error event, not a drop
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning",
                ws_max_size=4 * config.max_event_bytes + (1 << 20))
