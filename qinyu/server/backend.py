"""What the server loads once and every connection shares: the model on one
``BatchRunner`` (so all sessions' decode steps are batched), tokenizer, codec, speech
front end, speaker encoder, voice library, text-to-timbre, turn detector and ASR.

Conversations (``Session`` objects) are cheap views on these: a persona and a history.
They never decode by themselves here; their requests go to the shared runner.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from ..duplex.asr import load_asr
from ..duplex.turn import load_turn_detector
from ..engine import SamplingParams
from ..engine.batcher import BatchRunner
from ..engine.engine import EngineError, Request, StepOutput
from ..engine.reply import ReplyStream
from ..engine.session import Persona, Session, load_session
from ..layout import ASR_PROMPT, TTS_PROMPT
from .config import ServerConfig


class Backend:
    def __init__(self, model_dir, config: ServerConfig | None = None, timbre=None):
        from ..voice.library import VoiceLibrary

        self.config = config or ServerConfig()
        self.model_dir = Path(model_dir)
        base = load_session(model_dir, params=SamplingParams(max_steps=self.config.max_steps),
                            first_chunk=self.config.first_chunk)
        self.model, self.tokenizer, self.codec = base.model, base.tokenizer, base.codec
        self.front_end, self.speaker_encoder = base.front_end, base.speaker_encoder
        # the checkpoint's defaults (config system_prompt / default_voice) for sessions that set none
        self.default_system, self.default_voice = base.persona.system, base.persona.voice
        self.runner = BatchRunner(self.model, max_batch=self.config.max_batch)
        self.voices = VoiceLibrary(self.config.library)
        if timbre is None and self.config.timbre:
            from ..voice.timbre import TextToTimbre

            timbre = TextToTimbre.load(self.config.timbre)
        self.timbre = timbre
        self.turn_detector = load_turn_detector(self.config.turn_detector)
        self.whisper = load_asr(self.config.asr)
        self.live: dict = {}  # open realtime sessions by id
        self.vad_models: list = []  # Silero models of closed sessions, reused (loading one takes ~30 ms)

    @property
    def sessions(self) -> int:
        return len(self.live)

    @property
    def output_sample_rate(self) -> int | None:
        return self.codec.output_sample_rate if self.codec is not None else None

    @property
    def frame_rate(self) -> float | None:
        return self.codec.frame_rate if self.codec is not None else None

    def persona(self, system: str | None = None, role_description: str | None = None,
                voice: np.ndarray | None = None) -> Persona:
        """A persona; what is not given comes from the checkpoint's defaults (a role
        description replaces the default system prompt with the role-play template)."""
        if system is None and not role_description:
            system = self.default_system
        return Persona(system=system, role_description=role_description,
                       voice=voice if voice is not None else self.default_voice)

    def conversation(self, persona: Persona | None = None, max_steps: int | None = None) -> Session:
        return Session(self.model, self.tokenizer, self.codec, front_end=self.front_end,
                       speaker_encoder=self.speaker_encoder, persona=persona or Persona(),
                       params=SamplingParams(max_steps=max_steps or self.config.max_steps),
                       max_history=self.config.max_history, first_chunk=self.config.first_chunk)

    def reply_stream(self, keep_audio: bool = False) -> ReplyStream:
        return ReplyStream(self.tokenizer, self.model.layout, self.codec, self.config.first_chunk, keep_audio)

    def close(self) -> None:
        self.runner.close()

    async def take_vad_model(self):
        """A Silero model for one session (each keeps its own stream state)."""
        if self.vad_models:
            return self.vad_models.pop()
        from silero_vad import load_silero_vad

        return await asyncio.to_thread(load_silero_vad)  # from the wheel: nothing is downloaded

    def give_back_vad_model(self, model) -> None:
        if model is not None and len(self.vad_models) < self.config.max_sessions:
            self.vad_models.append(model)

    # -- decoding through the shared runner ----------------------------------------------
    async def stream(self, request: Request, on_submit=None):
        """Yield lists of this request's ``StepOutput``s as the shared engine makes them;
        the ticket is cancelled if the consumer stops early. ``on_submit(ticket)`` is called
        at once, so the caller can cancel a request that is still queued."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        ticket = self.runner.submit(request, lambda item: loop.call_soon_threadsafe(queue.put_nowait, item))
        if on_submit is not None:
            on_submit(ticket)
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                for item in items:
                    if isinstance(item, Exception):
                        raise item
                yield ticket, items
                if any(i.finished for i in items):
                    return
        finally:
            if not ticket.finished:
                self.runner.cancel(ticket)

    async def feed(self, reply: ReplyStream, outputs: list[StepOutput]) -> list:
        """A reply's events for these outputs. Cheap codecs (and text) are decoded inline:
        a thread hop per step costs more under load than it saves; costly ones in a thread."""
        if reply.codec is None or reply.codec.cheap_streaming:
            return reply.feed_all(outputs)
        return await asyncio.to_thread(reply.feed_all, outputs)

    async def complete(self, request: Request, reply: ReplyStream | None = None) -> ReplyStream:
        """Decode a request to its end (text, and audio when the reply stream has a codec)."""
        reply = reply or ReplyStream(self.tokenizer, self.model.layout)
        async for _, items in self.stream(request):
            await self.feed(reply, items)
        await asyncio.to_thread(reply.finish)
        return reply

    async def transcribe(self, wav: np.ndarray, use_whisper: bool = False) -> str:
        """16 kHz speech -> text: Whisper when configured and asked for, else the model's ASR prompt."""
        if use_whisper and self.whisper is not None:
            return await asyncio.to_thread(self.whisper.transcribe, wav, 16000)
        conv = self.conversation(max_steps=min(self.config.max_steps, 256))
        turn = await asyncio.to_thread(conv.user_turn, None, (wav, 16000), ASR_PROMPT)
        request = conv.request(turn, with_history=False, with_persona=False)
        return (await self.complete(request)).text.strip()

    async def speak(self, text: str, voice: np.ndarray | None = None) -> np.ndarray:
        """TTS. The reference's TTS prompt has no voice; with a voice, the system prompt
        carrying ``<|speaker|>`` is added (a qinyu extension)."""
        if self.codec is None:
            raise EngineError("this checkpoint names no codec: it cannot speak")
        conv = self.conversation(Persona(voice=voice))
        turn = conv.user_turn(text=text, prompt=TTS_PROMPT)
        request = conv.request(turn, with_history=False, with_persona=voice is not None)
        reply = await self.complete(request, self.reply_stream(keep_audio=True))
        return reply.audio()
