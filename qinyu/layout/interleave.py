"""Text/audio interleaving of an assistant turn (paper Eq. 1).

The schedule is a list of [text_n, audio_n] pairs; the last pair repeats. With the
reference default [[1, 8], [4, 8]] an assistant turn is 1 text token, 8 audio steps,
then [4 text, 8 audio] repeated. Both streams are chunked by the schedule; with
``n = min(#text chunks, #audio chunks)`` chunks, the last one absorbs *all* remaining
text and audio, so nothing is ever dropped.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")
A = TypeVar("A")

DEFAULT_SCHEDULE = ((1, 8), (4, 8))

TEXT = "text"
AUDIO = "audio"


class ScheduleError(ValueError):
    pass


def check_schedule(schedule) -> tuple[tuple[int, int], ...]:
    """Validate a schedule and return it as a tuple of (text_n, audio_n) pairs.

    Accepts pairs ``[[1, 8], [4, 8]]`` or the reference's flat list ``[1, 8, 4, 8]``.
    """
    try:
        items = list(schedule)
    except TypeError:
        raise ScheduleError(f"interleave schedule must be a list of [text_n, audio_n] pairs, got {schedule!r}")
    if items and all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        if len(items) % 2:
            raise ScheduleError(f"flat interleave schedule {items} has an odd length; need text_n, audio_n pairs")
        items = [items[i:i + 2] for i in range(0, len(items), 2)]
    if not items:
        raise ScheduleError("interleave schedule is empty; need at least one [text_n, audio_n] pair")
    pairs = []
    for i, pair in enumerate(items):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ScheduleError(f"interleave schedule entry {i} must be a [text_n, audio_n] pair, got {pair!r}")
        for name, n in zip(("text_n", "audio_n"), pair):
            if not isinstance(n, int) or isinstance(n, bool):
                raise ScheduleError(f"interleave schedule entry {i}: {name} must be an integer, got {n!r}")
            if n <= 0:
                raise ScheduleError(f"interleave schedule entry {i}: {name} must be positive, got {n}")
        pairs.append((pair[0], pair[1]))
    return tuple(pairs)


def _chunk(items: Sequence, sizes) -> list[list]:
    chunks, i = [], 0
    for n in sizes:
        if i >= len(items):
            break
        chunks.append(list(items[i:i + n]))
        i += n
    return chunks


def _sizes(schedule, column: int, total: int):
    """Chunk sizes for one stream: schedule entries in order, the last one repeating."""
    out, covered, i = [], 0, 0
    while covered < total:
        n = schedule[min(i, len(schedule) - 1)][column]
        out.append(n)
        covered += n
        i += 1
    return out


def interleave(text: Sequence[T], audio: Sequence[A], schedule=DEFAULT_SCHEDULE) -> list[tuple[str, T | A]]:
    """Merge a text stream and an audio-step stream into one sequence.

    Returns ``[(TEXT, item) | (AUDIO, item), ...]``. Either stream may be empty, in which
    case the other is returned alone.
    """
    schedule = check_schedule(schedule)
    text_chunks = _chunk(text, _sizes(schedule, 0, len(text)))
    audio_chunks = _chunk(audio, _sizes(schedule, 1, len(audio)))
    n = min(len(text_chunks), len(audio_chunks))
    if n == 0:
        return [(TEXT, t) for t in text] + [(AUDIO, a) for a in audio]
    # the last chunk absorbs everything that is left of both streams
    text_chunks = text_chunks[:n - 1] + [sum(text_chunks[n - 1:], [])]
    audio_chunks = audio_chunks[:n - 1] + [sum(audio_chunks[n - 1:], [])]
    out: list[tuple[str, T | A]] = []
    for tc, ac in zip(text_chunks, audio_chunks):
        out.extend((TEXT, t) for t in tc)
        out.extend((AUDIO, a) for a in ac)
    return out


def deinterleave(sequence: Sequence[tuple[str, T | A]]) -> tuple[list[T], list[A]]:
    """Split an interleaved sequence back into its text and audio streams."""
    text, audio = [], []
    for i, (kind, item) in enumerate(sequence):
        if kind == TEXT:
            text.append(item)
        elif kind == AUDIO:
            audio.append(item)
        else:
            raise ValueError(f"item {i} has kind {kind!r}, expected {TEXT!r} or {AUDIO!r}")
    return text, audio
