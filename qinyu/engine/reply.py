"""Turning one request's ``StepOutput``s into what a listener gets: text deltas as
text tokens arrive, audio chunks as the codec's streaming decoder releases them, and
at the end the full text and codes. Used the same way whether the request decodes on
its own engine (``Session.respond``) or in the server's shared batch.

It also remembers, for every text token, how many audio steps came before it. The
interleave puts text a little ahead of the speech that says it, so "the text heard
after F frames of audio" is the text produced before audio step F; barge-in uses this
to cut the assistant's history to what the user actually heard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .engine import StepOutput

BOOKKEEPING = ("<|end_of_conv|>", "<|im_end|>", "<|begin_of_audio|>", "<|end_of_audio|>")


@dataclass
class TextDelta:
    text: str


@dataclass
class AudioChunk:
    pcm: np.ndarray  # float32 mono
    sample_rate: int


@dataclass
class Done:
    text: str
    codes: np.ndarray  # (8, T)
    finished: str  # stop | length | cancelled
    steps: int
    invalid_codes: int


def visible_text(tokenizer, layout, ids: list[int]) -> str:
    """The reply's words: text tokens decoded; audio tokens, special tokens and bookkeeping tags removed
    (the reference keeps the history as ``decode(text_tokens, skip_special_tokens=True)``)."""
    text = tokenizer.decode([i for i in ids if not layout.is_audio(i)], skip_special_tokens=True)
    for tag in BOOKKEEPING:
        text = text.replace(tag, "")
    return text


class ReplyStream:
    def __init__(self, tokenizer, layout, codec=None, first_chunk: int | None = None, keep_audio: bool = False):
        self.keep_audio = keep_audio
        self.kept: list[np.ndarray] = []  # with keep_audio: every chunk handed out
        self.tokenizer, self.layout, self.codec = tokenizer, layout, codec
        self.decoder = codec.stream_decoder(**({"first_chunk": first_chunk} if first_chunk else {})) \
            if codec is not None else None
        self.text_ids: list[int] = []
        self.text_at_step: list[int] = []  # audio steps produced before each text token
        self.audio_steps = 0
        self.frames: list[np.ndarray] = []
        self.shown = ""
        self.audio_samples = 0  # samples handed out so far
        self.finished: str | None = None

    @property
    def sample_rate(self) -> int | None:
        return self.codec.output_sample_rate if self.codec is not None else None

    @property
    def text(self) -> str:
        return visible_text(self.tokenizer, self.layout, self.text_ids)

    @property
    def codes(self) -> np.ndarray:
        return np.concatenate(self.frames, axis=1) if self.frames else np.zeros((8, 0), dtype=np.int64)

    def feed(self, out: StepOutput) -> list[TextDelta | AudioChunk]:
        events: list[TextDelta | AudioChunk] = []
        if out.text_id is not None:
            self.text_ids.append(out.text_id)
            self.text_at_step.append(self.audio_steps)
            text = self.text
            # a multi-byte character split over tokens decodes to U+FFFD until it is complete
            if len(text) > len(self.shown) and not text.endswith("\ufffd"):
                events.append(TextDelta(text[len(self.shown):]))
                self.shown = text
        if out.audio_step is not None:
            self.audio_steps += 1
        if out.frames is not None and out.frames.shape[1]:
            self.frames.append(out.frames)
            if self.decoder is not None:
                events += self._audio(self.decoder.push(out.frames))
        if out.finished:
            self.finished = out.finished
        return events

    def feed_all(self, outputs: list[StepOutput]) -> list[TextDelta | AudioChunk]:
        return [event for out in outputs for event in self.feed(out)]

    def finish(self) -> list[TextDelta | AudioChunk]:
        """The rest once the request has ended: any held-back text and the decoder's tail."""
        events: list[TextDelta | AudioChunk] = []
        text = self.text
        if len(text) > len(self.shown):
            events.append(TextDelta(text[len(self.shown):]))
            self.shown = text
        if self.decoder is not None:
            events += self._audio(self.decoder.flush())
        return events

    def _audio(self, pcm: np.ndarray) -> list[AudioChunk]:
        if not len(pcm):
            return []
        self.audio_samples += len(pcm)
        if self.keep_audio:
            self.kept.append(np.asarray(pcm, dtype=np.float32))
        return [AudioChunk(np.asarray(pcm, dtype=np.float32), self.codec.output_sample_rate)]

    def audio(self) -> np.ndarray:
        """All the audio handed out (needs ``keep_audio``)."""
        if not self.keep_audio:
            raise RuntimeError("this reply stream does not keep its audio")
        return np.concatenate(self.kept) if self.kept else np.zeros(0, dtype=np.float32)

    def text_heard(self, audio_ms: float, frame_rate: float) -> str:
        """The text spoken in the first ``audio_ms`` of the reply's audio."""
        frames = audio_ms / 1000.0 * frame_rate
        if self.frames and frames >= sum(f.shape[1] for f in self.frames) - 1e-6:
            return self.text  # all the audio was heard, so was all the text (some of it comes after the last frame)
        ids = [i for i, at in zip(self.text_ids, self.text_at_step) if at < frames]
        return visible_text(self.tokenizer, self.layout, ids).rstrip("\ufffd")  # no half of a character

    def done(self, steps: int, invalid_codes: int) -> Done:
        return Done(self.text, self.codes, self.finished or "cancelled", steps, invalid_codes)
