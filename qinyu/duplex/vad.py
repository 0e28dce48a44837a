"""Streaming voice activity detection with Silero VAD (the ``silero-vad`` wheel ships
its model; nothing is downloaded).

Audio arrives in chunks of any size (16 kHz float32); Silero scores 512-sample windows
(32 ms). Speech starts after ``min_speech_s`` of windows at or above ``threshold``
(default 0.7, as the reference) and stops after ``min_silence_s`` of windows below
``threshold - 0.15`` (default 0.5 s). Each finished segment comes with its audio,
padded by ``pad_s`` on both sides (the start reaches back into a pre-roll buffer).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_RATE = 16000
WINDOW = 512


@dataclass
class VADConfig:
    threshold: float = 0.7
    min_speech_s: float = 0.2
    min_silence_s: float = 0.5
    pad_s: float = 0.03
    max_segment_s: float = 60.0

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ValueError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        if self.min_speech_s < 0 or self.min_silence_s <= 0 or self.pad_s < 0 or self.max_segment_s <= 0:
            raise ValueError("VAD durations must be positive")


@dataclass
class SpeechStarted:
    sample: int  # where speech starts, in samples since the stream began


@dataclass
class SpeechStopped:
    sample: int  # where speech ends
    audio: np.ndarray  # the segment, padded


_MODEL = None


def silero_model():
    global _MODEL
    if _MODEL is None:
        from silero_vad import load_silero_vad

        _MODEL = load_silero_vad()
    return _MODEL


class StreamingVAD:
    def __init__(self, config: VADConfig | None = None, model=None):
        self.config = config or VADConfig()
        self.model = model or silero_model()
        self.model.reset_states()
        self.pending = np.zeros(0, dtype=np.float32)  # samples not yet scored (< one window)
        self.history = np.zeros(0, dtype=np.float32)  # recent audio: pre-roll, or the current segment
        self.history_start = 0  # stream sample index of history[0]
        self.position = 0  # samples scored so far
        self.speaking = False
        self.start = 0
        self.run = 0  # samples of consecutive speech (not speaking) or silence (speaking)
        self.probabilities: deque[float] = deque(maxlen=1000)  # recent window scores (for inspection)

    def reset(self) -> None:
        self.__init__(self.config, self.model)

    def push(self, pcm: np.ndarray) -> list[SpeechStarted | SpeechStopped]:
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if not np.isfinite(pcm).all():
            raise ValueError("audio holds NaN or infinite samples")
        self.pending = np.concatenate([self.pending, pcm])
        events = []
        while len(self.pending) >= WINDOW:
            window, self.pending = self.pending[:WINDOW], self.pending[WINDOW:]
            events += self._score(window)
        return events

    def _score(self, window: np.ndarray) -> list:
        c = self.config
        with torch.no_grad():
            p = float(self.model(torch.from_numpy(window.copy()), SAMPLE_RATE))
        self.probabilities.append(p)
        self.history = np.concatenate([self.history, window])
        self.position += WINDOW
        pad = int(c.pad_s * SAMPLE_RATE)
        events = []
        if not self.speaking:
            self.run = self.run + WINDOW if p >= c.threshold else 0
            if self.run >= max(c.min_speech_s * SAMPLE_RATE, WINDOW):
                self.speaking = True
                self.start = max(self.position - self.run - pad, self.history_start, 0)
                self.run = 0
                events.append(SpeechStarted(self.start))
            else:  # keep only a short pre-roll while silent
                keep = int((c.min_speech_s + c.pad_s) * SAMPLE_RATE) + WINDOW
                if len(self.history) > keep:
                    drop = len(self.history) - keep
                    self.history, self.history_start = self.history[drop:], self.history_start + drop
        else:
            self.run = self.run + WINDOW if p < c.threshold - 0.15 else 0
            too_long = self.position - self.start >= c.max_segment_s * SAMPLE_RATE
            if self.run >= c.min_silence_s * SAMPLE_RATE or too_long:
                end = self.position - self.run + pad if not too_long else self.position
                segment = self.history[self.start - self.history_start:end - self.history_start]
                events.append(SpeechStopped(end, segment.copy()))
                self.speaking, self.run = False, 0
                self.history, self.history_start = np.zeros(0, dtype=np.float32), self.position
        return events
