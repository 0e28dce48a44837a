"""Per-request decoding state, made explicit (like moshi's streaming state).

A ``DecodeState`` holds what one request has produced: text tokens, delayed audio
steps, frames already released, the sampling generator and the stop reason. Frames are
released as soon as they are complete (frame t needs step t + 7, where codebook 7 of
frame t lives), so a streaming codec decoder gets every finished frame at once. A pad
or an out-of-range value in a released frame is replaced by code 0 and counted: it
never reaches the codec.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from ..layout import MAX_DELAY, NUM_CODEBOOKS, NUM_CODES
from .sampling import SamplingParams


@dataclass
class DecodeState:
    params: SamplingParams
    generator: torch.Generator
    text_ids: list[int] = field(default_factory=list)
    steps: list[np.ndarray] = field(default_factory=list)  # delayed audio steps, 8 indices each
    released: int = 0  # frames handed out so far
    audio_over: bool = False  # a codebook-0 pad was seen: the utterance is flushing
    invalid_codes: int = 0
    finished: str | None = None  # "stop" (<|im_end|>), "length", "cancelled"
    num_steps: int = 0
    recent_cb0: deque = field(default_factory=lambda: deque(maxlen=5))
    # enforced schedule: which chunk we are in and how much of it is used
    chunk: int = 0
    chunk_text: int = 0
    chunk_audio: int = 0
    text_over: bool = False  # <|end_of_conv|> was produced

    def schedule_phase(self, schedule) -> str:
        """'text' or 'audio': what the enforced schedule wants next ('free' once a stream is over)."""
        if self.text_over or self.audio_over:
            return "free"
        text_n, audio_n = schedule[min(self.chunk, len(schedule) - 1)]
        if self.chunk_text < text_n:
            return "text"
        if self.chunk_audio < audio_n:
            return "audio"
        self.chunk, self.chunk_text, self.chunk_audio = self.chunk + 1, 0, 0
        return self.schedule_phase(schedule)

    def add_audio_step(self, step: np.ndarray) -> None:
        self.steps.append(step)
        if step[0] >= NUM_CODES:
            self.audio_over = True

    def finished_frames(self, final: bool = False) -> np.ndarray:
        """The frames completed since the last call, as (8, n) codes. With ``final``
        (the reply ended before the delay was flushed) the started frames are released
        too, their missing codebooks set to 0 and counted as invalid."""
        available = len(self.steps) if final else len(self.steps) - MAX_DELAY  # frame t needs step t + 7
        frames = []
        t = self.released
        while t < available:
            if self.steps[t][0] >= NUM_CODES:  # codebook 0 pad: no frame starts here (delay flush)
                t += 1
                continue
            frame = np.array([self.steps[t + q][q] if t + q < len(self.steps) else -1 for q in range(NUM_CODEBOOKS)],
                             dtype=np.int64)
            bad = (frame < 0) | (frame >= NUM_CODES)
            self.invalid_codes += int(bad.sum())
            frames.append(np.where(bad, 0, frame))
            t += 1
        self.released = t
        if not frames:
            return np.zeros((NUM_CODEBOOKS, 0), dtype=np.int64)
        return np.stack(frames, axis=1)
