"""Streaming decode of a growing code stream.

For codecs whose decoder is not frame-local (XY-Tokenizer), :class:`ChunkedStreamDecoder`
does what the reference web demo does: decode chunks of a schedule of frame counts
(20, 16, 16, 24, 24, 36, 36, then 48), each with the previous chunk's codes prepended
as left context; drop the context's samples except the last ``fade`` seconds, and
cross-fade those with the held-back tail of the previous chunk (the two halves of a
Hamming window, as the reference; ``window="hann"`` sums to one instead). The first
chunk size is a parameter, since it sets the latency. Unlike the reference it handles
an empty stream and streams shorter than the first chunk.

Frame-local codecs (the nano codec) provide their own exact streaming decoder.
"""

from __future__ import annotations

import numpy as np

REFERENCE_SCHEDULE = (20, 16, 16, 24, 24, 36, 36, 48)


class ChunkedStreamDecoder:
    def __init__(self, codec, schedule=REFERENCE_SCHEDULE, first_chunk: int | None = None, fade_seconds: float = 0.2,
                 window: str = "hamming"):
        schedule = list(schedule)
        if first_chunk is not None:
            schedule[0] = first_chunk
        if not schedule or any((not isinstance(n, int)) or n <= 0 for n in schedule):
            raise ValueError(f"chunk schedule must be positive frame counts, got {schedule}")
        if window not in ("hamming", "hann"):
            raise ValueError(f"window must be 'hamming' or 'hann', got {window!r}")
        self.codec = codec
        self.schedule = schedule
        self.fade = int(round(fade_seconds * codec.output_sample_rate))
        self.window = window
        self.codes = np.zeros((codec.num_codebooks, 0), dtype=np.int64)
        self.decoded = 0  # frames decoded so far
        self.prev_start = 0  # first frame of the previous chunk (left context)
        self.chunk_index = 0
        self.held = np.zeros(0, dtype=np.float32)
        self.done = False

    def _next_size(self) -> int:
        return self.schedule[min(self.chunk_index, len(self.schedule) - 1)]

    def push(self, codes) -> np.ndarray:
        if self.done:
            raise RuntimeError("stream already flushed")
        codes = self.codec.check_codes(codes)
        self.codes = np.concatenate([self.codes, codes], axis=1)
        out = []
        while self.codes.shape[1] - self.decoded >= self._next_size():
            out.append(self._decode_chunk(self.decoded + self._next_size(), final=False))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        if self.done:
            return np.zeros(0, dtype=np.float32)
        out = []
        if self.codes.shape[1] > self.decoded:
            out.append(self._decode_chunk(self.codes.shape[1], final=True))
        else:
            out.append(self.held)
        self.held = np.zeros(0, dtype=np.float32)
        self.done = True
        return np.concatenate(out).astype(np.float32)

    def _fades(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        full = np.hamming(2 * n) if self.window == "hamming" else np.hanning(2 * n + 2)[1:-1]
        return full[n:], full[:n]  # fade-out (held tail), fade-in (new audio)

    def _decode_chunk(self, end: int, final: bool) -> np.ndarray:
        start = self.decoded
        ctx = self.prev_start if self.chunk_index else start
        wav = np.asarray(self.codec.decode(self.codes[:, ctx:end]), dtype=np.float32)
        ctx_samples = int(round((start - ctx) * self.codec.samples_per_frame))
        n = min(self.fade, ctx_samples, len(self.held))
        seg = wav[ctx_samples - n:].copy()
        if n:
            fade_out, fade_in = self._fades(n)
            seg[:n] = self.held[len(self.held) - n:] * fade_out + seg[:n] * fade_in
        # held samples that found no overlap (very short context) are released as they are
        out = [self.held[:len(self.held) - n]] if len(self.held) > n else []
        if final:
            out.append(seg)
            self.held = np.zeros(0, dtype=np.float32)
        else:
            keep = min(self.fade, len(seg))
            out.append(seg[:len(seg) - keep])
            self.held = seg[len(seg) - keep:]
        self.prev_start, self.decoded = start, end
        self.chunk_index += 1
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
