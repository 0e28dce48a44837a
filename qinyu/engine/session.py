"""Conversations on top of the engine: prompts, history, persona, streaming events.

A ``Session`` renders the conversation with ``qinyu.layout`` (ChatML, the system prompt
with ``<|speaker|>`` and the role description, ``<|user_speaker|><|audio|>`` for user
speech), keeps the history by the reference's policy (assistant text kept, assistant
speech dropped; user speech re-encoded each turn), and streams a reply as events:
``TextDelta`` as text tokens arrive, ``AudioChunk`` as the codec's streaming decoder
releases audio, and ``Done`` with the full text and codes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..layout import ASR_PROMPT, TTS_PROMPT, UserSpeech, render, system_prompt
from .engine import Engine, EngineError, Request
from .reply import AudioChunk, Done, ReplyStream, TextDelta, visible_text
from .sampling import SamplingParams

SPEAKER_DIM = 192
# strings that would become control tokens if they came from a user
RESERVED = ("<|im_start|>", "<|im_end|>", "<|audio|>", "<|user_speaker|>", "<|speaker|>", "<|context_of_audio|>",
            "<|begin_of_audio|>", "<|end_of_audio|>", "<|end_of_conv|>", "<|endoftext|>")


@dataclass
class Persona:
    system: str | None = None  # a full system prompt; None: the reference's template; "": no system message
    role_description: str | None = None
    voice: np.ndarray | None = None  # 192-d assistant voice (None: zeros)


@dataclass
class Turn:
    role: str
    text: str = ""
    features: np.ndarray | None = None  # user speech
    speaker: np.ndarray | None = None


class Session:
    """One conversation. ``model`` is a loaded QinYuForConditionalGeneration; ``codec``
    (optional) turns codes into audio; ``front_end`` turns 16 kHz speech into features;
    ``speaker_encoder`` (optional) gives user voices."""

    def __init__(self, model, tokenizer, codec=None, front_end=None, speaker_encoder=None,
                 persona: Persona | None = None, params: SamplingParams | None = None, max_history: int = 4,
                 max_audio_seconds: float = 300.0, first_chunk: int | None = None):
        from ..audio.fbank import SenseVoiceFrontEnd

        self.model, self.tokenizer, self.codec = model, tokenizer, codec
        self.front_end = front_end or SenseVoiceFrontEnd()
        self.speaker_encoder = speaker_encoder
        self.persona = persona or Persona()
        self.params = params or SamplingParams()
        self.max_history, self.max_audio_seconds = max_history, max_audio_seconds
        self.first_chunk = first_chunk
        self.history: list[Turn] = []

    # -- prompts ---------------------------------------------------------------------
    def user_turn(self, text: str | None = None, audio: tuple[np.ndarray, int] | None = None,
                  prompt: str | None = None) -> Turn:
        """A user turn from text, speech (wav, sample_rate), or both (text before speech)."""
        from ..audio.io import check_waveform, resample

        if text:
            found = [t for t in RESERVED if t in text]
            if found:
                raise EngineError(f"user text may not contain the special token(s) {found}")

        if audio is None:
            if not text or not text.strip():
                raise EngineError("empty prompt: give text or audio")
            return Turn("user", prompt.format(text=text) if prompt else text)
        wav, sr = audio
        wav = check_waveform(wav, sr, "user audio")
        if len(wav) / sr > self.max_audio_seconds:
            raise EngineError(f"user audio of {len(wav) / sr:.1f} s is longer than the maximum of "
                              f"{self.max_audio_seconds:.0f} s")
        wav = resample(wav, sr, 16000)
        feats = self.front_end(wav, 16000)
        if len(feats) == 0:
            raise EngineError("user audio is shorter than one 25 ms frame")
        speaker = (self.speaker_encoder.embed(wav, 16000, dtype=self.model.config.speaker_dtype)
                   if self.speaker_encoder is not None
                   else np.zeros(SPEAKER_DIM, np.float32))
        content = prompt if prompt else ((text or "") + "<|user_speaker|><|audio|>")
        return Turn("user", content, feats, speaker)

    def request(self, turn: Turn, with_history: bool = True, with_persona: bool = True) -> Request:
        layout = self.model.layout
        keep = 2 * self.max_history if with_history else 0
        turns = (self.history[len(self.history) - keep:] if keep else []) + [turn]
        messages, audios, features, users = [], [], [], []
        if with_persona and self.model.config.use_speaker_embedding and self.persona.system != "":
            sys_text = self.persona.system or system_prompt(self.persona.role_description or None)
            messages.append({"role": "system", "content": sys_text})
        encoder = self.model.audio_encoder
        for t in turns:
            messages.append({"role": t.role, "content": t.text})
            if t.features is not None:
                if encoder is None:
                    raise EngineError("this model has no audio encoder: it cannot hear speech")
                audios.append(UserSpeech(int(encoder.output_frames(len(t.features)))))
                features.append(t.features)
                users.append(t.speaker)
        seq = render(messages, self.tokenizer, layout, audios, add_generation_prompt=True,
                     schedule=self.model.config.interleave_schedule)
        if not self.model.config.use_speaker_embedding:  # placeholders keep their plain token embeddings
            return Request(seq.input_ids, features, None, dataclasses.replace(self.params))
        voice = self.persona.voice if self.persona.voice is not None else np.zeros(SPEAKER_DIM, np.float32)
        speakers, it = [], iter(users)
        for p in seq.speaker_positions:
            speakers.append(voice if seq.input_ids[p] == layout.speaker else next(it))
        # each request gets its own copy of the parameters: changing the session's later must not
        # change a reply already decoding
        return Request(seq.input_ids, features, np.stack(speakers) if speakers else None,
                       dataclasses.replace(self.params))

    # -- replies ---------------------------------------------------------------------
    def respond(self, turn: Turn, remember: bool = True, **request_kw) -> Iterator[TextDelta | AudioChunk | Done]:
        """Stream the reply to ``turn``; on completion the turn and the reply's text join
        the history (the assistant's speech does not). The session decodes on its own
        engine; the server instead submits ``request(turn)`` to its shared ``BatchRunner``."""
        engine = Engine(self.model, max_batch=1)
        reply = self.reply_stream()
        rid = engine.add(self.request(turn, **request_kw))
        state = engine.state(rid)
        try:
            while state.finished is None:
                for out in engine.step():
                    yield from reply.feed(out)
        finally:
            if state.finished is None:
                engine.cancel(rid)
        yield from reply.finish()
        if remember:
            self.history += [turn, Turn("assistant", reply.text)]
        yield reply.done(state.num_steps, state.invalid_codes)

    def reply_stream(self) -> ReplyStream:
        return ReplyStream(self.tokenizer, self.model.layout, self.codec, self.first_chunk)

    def visible_text(self, ids: list[int]) -> str:
        return visible_text(self.tokenizer, self.model.layout, ids)

    # -- tasks -----------------------------------------------------------------------
    def asr(self, wav: np.ndarray, sample_rate: int) -> str:
        turn = self.user_turn(audio=(wav, sample_rate), prompt=ASR_PROMPT)
        return _collect(self.respond(turn, remember=False, with_history=False, with_persona=False)).text

    def tts(self, text: str):
        turn = self.user_turn(text=text, prompt=TTS_PROMPT)
        return self.respond(turn, remember=False, with_history=False, with_persona=False)


def _collect(events) -> Done:
    done = None
    for e in events:
        if isinstance(e, Done):
            done = e
    return done


SMALL_MODEL = 1_000_000_000  # parameters; below this a CPU session runs in fp32 whatever the stored dtype


def load_session(model_dir, voice: str | None = None, role: str | None = None, library=None, timbre=None,
                 params: SamplingParams | None = None, first_chunk: int | None = None, voice_clip=None,
                 speaker_encoder=None) -> Session:
    """A session for a checkpoint folder: its tokenizer, the codec its config names (if
    any), the assistant voice from a library voice (name or id), a reference clip
    (through ``speaker_encoder``: a folder or the official CAM++ .bin) or a role
    description (text-to-timbre)."""
    from ..codec import CodecError, codec_for_checkpoint
    from ..layout import load_tokenizer
    from ..model import QinYuForConditionalGeneration

    model = QinYuForConditionalGeneration.from_pretrained(model_dir)
    if model.dtype != torch.float32 and not torch.cuda.is_available() and model.num_parameters() < SMALL_MODEL:
        # a small model shipped in bf16 to save space (qinyu-nano) runs in fp32 on a CPU, as it was
        # trained: CPU bf16 matmuls are slower and round the logits; large models keep their dtype
        model = model.float()
    tokenizer = load_tokenizer(Path(model_dir))
    try:
        codec = codec_for_checkpoint(model_dir)
    except CodecError:
        codec = None
    from ..audio.fbank import SenseVoiceFrontEnd

    def resolve(path):
        path = Path(path)
        return path if path.is_absolute() else Path(model_dir) / path

    persona = Persona(role_description=role)
    if role is None and model.config.system_prompt is not None:
        persona.system = model.config.system_prompt
    if model.config.default_voice:
        persona.voice = np.load(resolve(model.config.default_voice)).astype(np.float32)
    front_end = SenseVoiceFrontEnd.from_mvn(resolve(model.config.cmvn)) if model.config.cmvn else SenseVoiceFrontEnd()
    speaker_encoder = speaker_encoder or (resolve(model.config.speaker_encoder) if model.config.speaker_encoder else None)
    encoder = None
    if speaker_encoder:
        from ..voice.campplus import SpeakerEncoder

        path = Path(speaker_encoder)
        encoder = SpeakerEncoder.from_official(path) if path.suffix == ".bin" else SpeakerEncoder.load(path)
    if voice_clip:
        from ..audio.io import load_audio

        if encoder is None:
            raise EngineError("a reference clip needs a speaker encoder (--speaker-encoder)")
        persona.voice = encoder.embed(*load_audio(voice_clip), dtype=model.config.speaker_dtype)
    elif voice:
        from ..voice.library import VoiceLibrary

        persona.voice = VoiceLibrary(library).get(voice).vector
    elif role and timbre:
        from ..voice.timbre import TextToTimbre

        persona.voice = TextToTimbre.load(timbre).generate(role)
    return Session(model, tokenizer, codec, front_end=front_end, speaker_encoder=encoder, persona=persona,
                   params=params, first_chunk=first_chunk)
