"""The qinyu HTTP server (FastAPI): health, speech synthesis, transcription and the
voice library over REST. One model is loaded once and shared; requests that generate
take a lock for now (the realtime WebSocket, with batching across sessions, is next).

    GET    /health                    -> {"status": "ok", "model": ..., "sample_rate": ...}
    POST   /v1/audio/speech           {"input": text, "voice": name?} -> audio/wav
    POST   /v1/audio/transcriptions   multipart "file" -> {"text": ...}
    GET    /v1/voices                 -> {"voices": [...]}
    POST   /v1/voices                 {"name", "vector": [192 floats]} | {"name", "description"}
    DELETE /v1/voices/{name}
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..engine import SamplingParams
from ..engine.session import AudioChunk, Done, load_session


class SpeechRequest(BaseModel):
    input: str = Field(min_length=1, max_length=4000)
    voice: str | None = None
    response_format: str = "wav"


class VoiceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    vector: list[float] | None = None
    description: str | None = None


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(pcm, -1, 1), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def create_app(model_dir, library=None, timbre=None, max_steps: int = 1024, max_upload_bytes: int = 25 << 20):
    from ..voice.library import VoiceError, VoiceLibrary

    session = load_session(model_dir, params=SamplingParams(max_steps=max_steps))
    voices = VoiceLibrary(library)
    lock = threading.Lock()
    app = FastAPI(title="qinyu", version="0.1.0")

    @app.get("/health")
    def health():
        return {"status": "ok", "model": str(Path(model_dir)),
                "trained": bool(session.model.config.trained),
                "sample_rate": session.codec.output_sample_rate if session.codec else None}

    @app.post("/v1/audio/speech")
    def speech(req: SpeechRequest):
        if req.response_format != "wav":
            raise HTTPException(400, f"response_format {req.response_format!r} is not supported (use 'wav')")
        if session.codec is None:
            raise HTTPException(503, "this checkpoint names no codec: it cannot speak")
        try:
            voice = voices.get(req.voice).vector if req.voice else None
        except VoiceError as e:
            raise HTTPException(404, str(e)) from None
        with lock:
            session.persona.voice = voice
            pcm = [e.pcm for e in session.tts(req.input) if isinstance(e, AudioChunk)]
        audio = np.concatenate(pcm) if pcm else np.zeros(0, np.float32)
        return Response(wav_bytes(audio, session.codec.output_sample_rate), media_type="audio/wav")

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...)):
        from ..audio.io import AudioError, check_waveform
        import soundfile as sf

        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"audio file larger than {max_upload_bytes} bytes")
        try:
            wav, sr = sf.read(io.BytesIO(data), dtype="float32")
            wav = check_waveform(wav, sr, file.filename or "upload")
        except (RuntimeError, sf.LibsndfileError, AudioError) as e:
            raise HTTPException(400, f"cannot read audio {file.filename!r}: {e}") from None
        with lock:
            try:
                text = session.asr(wav, sr)
            except ValueError as e:
                raise HTTPException(400, str(e)) from None
        return {"text": text}

    @app.get("/v1/voices")
    def list_voices():
        return {"voices": [v.summary() for v in voices.list()]}

    @app.post("/v1/voices", status_code=201)
    def create_voice(req: VoiceCreate):
        try:
            if req.vector is not None:
                voice = voices.add(req.name, np.asarray(req.vector, dtype=np.float32), "vector", "api")
            elif req.description:
                if timbre is None:
                    raise HTTPException(400, "the server has no text-to-timbre model (start it with --timbre)")
                voice = voices.create_from_description(req.name, req.description, timbre)
            else:
                raise HTTPException(400, "give a 'vector' (192 floats) or a 'description'")
        except VoiceError as e:
            raise HTTPException(400, str(e)) from None
        return voice.summary()

    @app.delete("/v1/voices/{name}")
    def delete_voice(name: str):
        try:
            return voices.delete(name).summary()
        except VoiceError as e:
            raise HTTPException(404, str(e)) from None

    return app
