"""Singing voice synthesis: lyrics sung to notes, from espeak-ng speech and Praat PSOLA.

A song is a list of notes (MIDI pitch, start and duration in seconds, one lyric syllable
each) with named segments (lines, parts). It is written as a note list (``song_from_dict``,
pitch as a MIDI number or a note name such as "C#4") or read from a MIDI file with lyric
events (``read_midi``, through mido).

``Singer.sing`` speaks every syllable with espeak-ng in the requested voice and moves it
onto its note with Praat's PSOLA (parselmouth's Manipulation): the pitch tier is replaced
by the note's frequency and a duration tier stretches the syllable to the note's length.
Only the vowel (the voiced middle) is stretched; the consonants keep their natural length
unless the note is too short for them, which is how a singer holds a note. The notes are
then laid at their start times with short raised-cosine crossfades.

A song that cannot be sung (overlapping notes, an empty lyric, a non-positive duration,
an unknown note name) raises ``SongError`` listing every problem with its note number,
so a pipeline records that item as failed and sings the rest.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .tts import EspeakTTS, Voice


class SongError(ValueError):
    """A song that cannot be sung; ``problems`` lists each bad note or field."""

    def __init__(self, title: str, problems: list[str]):
        self.title = title
        self.problems = list(problems)
        shown = "; ".join(self.problems[:10]) + (f"; ... and {len(self.problems) - 10} more"
                                                  if len(self.problems) > 10 else "")
        super().__init__(f"song {title!r}: {shown}")


# --- pitch names ------------------------------------------------------------------------

_NOTE = re.compile(r"^([A-Ga-g])([#b]?)(-?\d+)$")
_STEPS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


def note_to_midi(pitch) -> int:
    """60, "60", "C4", "c#4", "Db4" -> a MIDI note number (C4 = 60, A4 = 69 = 440 Hz)."""
    if isinstance(pitch, bool):
        raise ValueError(f"pitch must be a MIDI number or a note name like 'C4', got {pitch!r}")
    if isinstance(pitch, (int, np.integer)) or (isinstance(pitch, float) and pitch.is_integer()):
        number = int(pitch)
    elif isinstance(pitch, str) and pitch.strip().isdigit():
        number = int(pitch)
    elif isinstance(pitch, str) and _NOTE.match(pitch.strip()):
        letter, accidental, octave = _NOTE.match(pitch.strip()).groups()
        number = 12 * (int(octave) + 1) + _STEPS[letter.lower()] + {"#": 1, "b": -1, "": 0}[accidental]
    else:
        raise ValueError(f"pitch must be a MIDI number or a note name like 'C4' or 'F#3', got {pitch!r}")
    if not 0 <= number <= 127:
        raise ValueError(f"pitch {pitch!r} is MIDI {number}, outside 0..127")
    return number


def midi_to_name(number: int) -> str:
    return f"{NAMES[number % 12]}{number // 12 - 1}"


def midi_to_hz(number: float) -> float:
    return 440.0 * 2.0 ** ((number - 69) / 12.0)


def hz_to_midi(hz: float) -> float:
    return 69.0 + 12.0 * float(np.log2(hz / 440.0))


# --- songs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    pitch: int              # MIDI note number
    start: float            # seconds from the song's start
    duration: float         # seconds
    lyric: str              # the syllable as written ("kle")
    sound: str = ""         # what espeak-ng is given when the spelling misleads it ("kul")
    joins_next: bool = False  # the next note's syllable belongs to the same word ("Twin-" "kle")

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True)
class Segment:
    name: str               # "the first line", "the chorus"
    first: int              # index of its first note
    last: int               # index of its last note (inclusive)


@dataclass
class Song:
    key: str                # file-safe id
    title: str
    notes: list[Note]
    segments: list[Segment] = field(default_factory=list)
    language: str = "en"

    def __post_init__(self):
        if not self.segments and self.notes:
            self.segments = [Segment("the whole song", 0, len(self.notes) - 1)]

    @property
    def duration(self) -> float:
        return max((n.end for n in self.notes), default=0.0)

    def part(self, segment: Segment) -> "Song":
        """The segment as a song of its own, starting at 0 s."""
        notes = self.notes[segment.first:segment.last + 1]
        t0 = notes[0].start
        notes = [replace(n, start=n.start - t0) for n in notes]
        notes[-1] = replace(notes[-1], joins_next=False)
        return Song(self.key, self.title, notes, [Segment(segment.name, 0, len(notes) - 1)], self.language)

    def transposed(self, semitones: int) -> "Song":
        return replace(self, notes=[replace(n, pitch=n.pitch + semitones) for n in self.notes])

    def words(self) -> list[tuple[str, float, float]]:
        """(word, start, duration) for every word: its syllables' notes, joined."""
        return _words(self.notes)

    def lyrics(self) -> str:
        """The lyrics as text, one line per segment (Mandarin without spaces)."""
        sep = "" if self.language == "zh" else " "
        return "\n".join(sep.join(w for w, _, _ in _words(self.notes[s.first:s.last + 1])) for s in self.segments)

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "language": self.language,
                "notes": [{"pitch": n.pitch, "start": round(n.start, 6), "duration": round(n.duration, 6),
                           "lyric": n.lyric + ("-" if n.joins_next else "")}
                          | ({"sound": n.sound} if n.sound else {}) for n in self.notes],
                "segments": [asdict(s) for s in self.segments]}


def _words(notes: list[Note]) -> list[tuple[str, float, float]]:
    out, parts, start = [], [], None
    for i, n in enumerate(notes):
        start = n.start if start is None else start
        parts.append(n.lyric)
        if not n.joins_next or i == len(notes) - 1:  # a segment's last note ends its word
            out.append(("".join(parts), start, n.end - start))
            parts, start = [], None
    return out


def check_song(song: Song, min_gap_s: float = -1e-3) -> list[str]:
    """Every reason ``song`` cannot be sung (empty when it is fine)."""
    problems = []
    if not song.notes:
        return ["no notes"]
    for i, n in enumerate(song.notes):
        where = f"note {i + 1} ({midi_to_name(n.pitch) if 0 <= n.pitch <= 127 else n.pitch} at {n.start:.3f} s)"
        if not (n.duration > 0):
            problems.append(f"{where}: duration must be positive, got {n.duration}")
        if n.start < 0:
            problems.append(f"{where}: start must be >= 0, got {n.start}")
        if not n.lyric.strip() and not n.sound.strip():
            problems.append(f"{where}: empty lyric")
        if not 24 <= n.pitch <= 108:
            problems.append(f"{where}: pitch {n.pitch} is outside the singable range C1..C8 (MIDI 24..108)")
    for i in range(1, len(song.notes)):
        a, b = song.notes[i - 1], song.notes[i]
        if b.start - a.end < min_gap_s:
            problems.append(f"notes {i} and {i + 1} overlap: note {i} ends at {a.end:.3f} s, note {i + 1} starts "
                            f"at {b.start:.3f} s (one voice sings one note at a time)")
    for s in song.segments:
        if not 0 <= s.first <= s.last < len(song.notes):
            problems.append(f"segment {s.name!r}: notes {s.first + 1}..{s.last + 1} are not in the song's "
                            f"{len(song.notes)} notes")
    return problems


def validate(song: Song) -> Song:
    problems = check_song(song)
    if problems:
        raise SongError(song.title, problems)
    return song


def _split_lyric(text: str) -> tuple[str, str, bool]:
    """'kle|kul' -> ('kle', 'kul', False); 'Twin-' -> ('Twin', '', True)."""
    text = str(text).strip()
    joins = text.endswith("-") and len(text) > 1
    text = text[:-1] if joins else text
    lyric, _, sound = text.partition("|")
    return lyric.strip(), sound.strip(), joins


def song_from_dict(d: dict, key: str | None = None) -> Song:
    """A song from its JSON form, checked; ``SongError`` lists every problem.

    ``{"title", "language"?, "notes": [{"pitch": "C4" | 60, "start": s, "duration": s,
    "lyric": "Twin-"}...], "segments"?: [{"name", "first", "last"}]}``. A lyric ending in
    "-" continues into the next note's word; "kle|kul" sings "kul" for the syllable "kle"."""
    title = str(d.get("title") or key or "untitled")
    problems, notes = [], []
    raw_notes = d.get("notes")
    if not isinstance(raw_notes, list):
        raise SongError(title, ["'notes' must be a list of {pitch, start, duration, lyric}"])
    for i, n in enumerate(raw_notes):
        where = f"note {i + 1}"
        if not isinstance(n, dict):
            problems.append(f"{where}: must be an object with pitch, start, duration, lyric")
            continue
        try:
            pitch = note_to_midi(n.get("pitch"))
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        try:
            start, duration = float(n.get("start")), float(n.get("duration"))
        except (TypeError, ValueError):
            problems.append(f"{where}: start and duration must be numbers (seconds), got "
                            f"{n.get('start')!r} and {n.get('duration')!r}")
            continue
        lyric, sound, joins = _split_lyric(n.get("lyric", ""))
        if n.get("sound"):
            sound = str(n["sound"])
        notes.append(Note(pitch, start, duration, lyric, sound, joins))
    if problems:
        raise SongError(title, problems)
    segments = []
    for j, s in enumerate(d.get("segments") or []):
        try:
            segments.append(Segment(str(s.get("name") or f"line {j + 1}"), int(s["first"]), int(s["last"])))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise SongError(title, [f"segment {j + 1}: must be {{name, first, last}} (note indices), got {s!r}"]) \
                from None
    song = Song(key or file_key(title), title, notes, segments, str(d.get("language", "en")))
    return validate(song)


def song_from_phrases(key: str, title: str, bpm: float, phrases: list[tuple[str, str, str]],
                      language: str = "en") -> Song:
    """A song written phrase by phrase: (name, melody, lyrics).

    The melody is note names with optional beats ("C4 C4 G4:2 r:1"; "r" is a rest); the
    lyrics are one syllable per sung note ("Twin- kle|kul ...")."""
    beat = 60.0 / bpm
    notes, segments, t = [], [], 0.0
    for name, melody, lyrics in phrases:
        syllables = iter(lyrics.split())
        tokens = [t.partition(":") for t in melody.split()]
        sung = sum(1 for pitch, _, _ in tokens if pitch.lower() != "r")
        if sung != len(lyrics.split()):
            raise SongError(title, [f"phrase {name!r}: {sung} notes but {len(lyrics.split())} syllables"])
        first = len(notes)
        for pitch, _, beats in tokens:
            length = float(beats or 1) * beat
            if pitch.lower() != "r":
                lyric, sound, joins = _split_lyric(next(syllables))
                notes.append(Note(note_to_midi(pitch), t, length, lyric, sound, joins))
            t += length
        segments.append(Segment(name, first, len(notes) - 1))
    return validate(Song(key, title, notes, segments, language))


def file_key(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "song"


# --- MIDI -------------------------------------------------------------------------------


def read_midi(path, title: str | None = None, language: str = "en", phrase_gap_s: float = 0.25) -> Song:
    """A song from a MIDI file with lyric events (one per note, at the note's onset).

    Segments come from marker events if there are any, otherwise from rests of at least
    ``phrase_gap_s`` and karaoke line breaks in the lyrics ("/" before, "\\r" after)."""
    import mido

    path = Path(path)
    title = title or path.stem
    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError) as e:
        raise SongError(title, [f"cannot read MIDI file {path}: {e}"]) from None
    t, open_notes, spans, lyrics, markers = 0.0, {}, [], [], []
    for msg in midi:  # merged tracks, times in seconds (tempo changes applied)
        t += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            if msg.note in open_notes:  # a repeated key without its note-off: close the first
                spans.append((open_notes.pop(msg.note), t, msg.note))
            open_notes[msg.note] = t
        elif msg.type in ("note_off", "note_on") and msg.note in open_notes:
            spans.append((open_notes.pop(msg.note), t, msg.note))
        elif msg.type == "lyrics":
            lyrics.append((t, msg.text))
        elif msg.type == "marker":
            markers.append((t, msg.text))
    spans.extend((s, t, n) for n, s in open_notes.items())
    spans.sort()
    if not spans:
        raise SongError(title, [f"MIDI file {path} has no notes"])
    if not lyrics:
        raise SongError(title, [f"MIDI file {path} has no lyric events (one 'lyrics' meta event per note)"])
    notes, breaks, used = [], set(), 0
    for i, (start, end, pitch) in enumerate(spans):
        text = ""
        # the lyric of a note is the next unused lyric event at (or within a millisecond before) its onset
        while used < len(lyrics) and lyrics[used][0] < start - 1e-3:
            used += 1
        if used < len(lyrics) and abs(lyrics[used][0] - start) <= 1e-3:
            text = lyrics[used][1]
            used += 1
        # karaoke line breaks: "/" or "\\" before a syllable starts a line, "\r"/"\n" after one ends it
        if text[:1] in ("/", "\\"):
            breaks.add(i)
        if text[-1:] in ("\r", "\n"):
            breaks.add(i + 1)
        text = text.strip("/\\\r\n")
        lyric, sound, joins = _split_lyric(text)
        notes.append(Note(pitch, start, end - start, lyric, sound, joins))
    segments = _segments_from_midi(notes, markers, breaks, phrase_gap_s)
    return validate(Song(file_key(title), title, notes, segments, language))


def _segments_from_midi(notes, markers, breaks, gap_s) -> list[Segment]:
    if markers:
        starts = []
        for t, name in markers:
            first = next((i for i, n in enumerate(notes) if n.start >= t - 1e-3), None)
            if first is not None:
                starts.append((first, name.strip() or f"part {len(starts) + 1}"))
    else:
        cut = {0} | {i for i in range(1, len(notes)) if notes[i].start - notes[i - 1].end >= gap_s}
        cut |= {i for i in breaks if 0 < i < len(notes)}
        starts = [(i, "") for i in sorted(cut)]
    starts = sorted(dict(starts).items())
    if not starts or starts[0][0] != 0:
        starts.insert(0, (0, ""))
    segments = []
    for k, (first, name) in enumerate(starts):
        last = starts[k + 1][0] - 1 if k + 1 < len(starts) else len(notes) - 1
        segments.append(Segment(name or f"line {k + 1}", first, last))
    return segments


def write_midi(song: Song, path, bpm: float = 120.0) -> Path:
    """The song as a type-0 MIDI file with a lyric event at each note and a marker per segment."""
    import mido

    ticks_per_beat = 480
    seconds_per_tick = 60.0 / bpm / ticks_per_beat
    events = []  # (tick, order, message): markers, then lyrics, then note-ons at the same tick
    for s in song.segments:
        events.append((round(song.notes[s.first].start / seconds_per_tick), 0, mido.MetaMessage("marker", text=s.name)))
    for n in song.notes:
        on, off = round(n.start / seconds_per_tick), round(n.end / seconds_per_tick)
        text = n.lyric + ("|" + n.sound if n.sound else "") + ("-" if n.joins_next else "")
        events.append((on, 1, mido.MetaMessage("lyrics", text=text)))
        events.append((on, 2, mido.Message("note_on", note=n.pitch, velocity=90)))
        events.append((off, -1, mido.Message("note_off", note=n.pitch, velocity=0)))  # offs before next ons
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)),
                            mido.MetaMessage("track_name", name=song.title)])
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    path = Path(path)
    midi.save(str(path))
    return path


# --- singing ----------------------------------------------------------------------------


def _trim(wav: np.ndarray, sr: int, threshold_db: float = -40.0) -> np.ndarray:
    """Cut the silence espeak-ng leaves before and after a word (10 ms frames)."""
    hop = max(1, sr // 100)
    frames = len(wav) // hop
    if frames == 0:
        return wav
    rms = np.sqrt(np.mean(wav[:frames * hop].reshape(frames, hop) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > threshold_db)
    return wav[loud[0] * hop:(loud[-1] + 1) * hop] if loud.size else wav


def _voiced_span(sound, floor: float = 60.0, ceiling: float = 800.0) -> tuple[float, float] | None:
    """(first, last) voiced time of a Praat Sound, or None when nothing is voiced."""
    pitch = sound.to_pitch(0.005, floor, ceiling)
    f0 = pitch.selected_array["frequency"]
    voiced = np.flatnonzero(f0 > 0)
    if voiced.size < 2:
        return None
    times = pitch.xs()
    return float(times[voiced[0]]), float(times[voiced[-1]])


def _fade(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))).astype(np.float32) if n > 0 else np.ones(0, np.float32)


class Singer:
    """Sings a ``Song`` in an espeak-ng ``Voice`` (see the module docstring)."""

    def __init__(self, tts: EspeakTTS | None = None, crossfade_s: float = 0.015, consonant_share: float = 0.35,
                 level: float = 0.1):
        # each syllable from a fresh espeak-ng (the program): from the library's one engine, a
        # syllable's pitch flutter and end pause depend on the syllable before, and sung pitch
        # accuracy moved by up to 0.1 on one song of 76 (docs/nano.md)
        self.tts = tts or EspeakTTS(library=False)
        self.crossfade_s = crossfade_s
        self.consonant_share = consonant_share  # at most this share of a note goes to its consonants
        self.level = level                      # RMS of each sung note
        self._syllables: dict = {}
        self._speech_f0: dict = {}
        self._range: dict = {}

    def speech_f0(self, voice: Voice) -> float:
        """The voice's median speaking F0 (Hz), measured once per voice."""
        if voice not in self._speech_f0:
            self._speech_f0[voice] = self._median_f0(voice)
        return self._speech_f0[voice]

    def octave_shift(self, song: Song, voice: Voice, lift: float = 1.6, lowest: int = 43, highest: int = 84) -> int:
        """Whole octaves (in semitones) that bring the song's median note nearest to the
        voice's register, taken as ``lift`` times its speaking F0 (people sing above the
        pitch they speak at). The notes are then kept, where the song's range allows,
        within half an octave of what espeak-ng can speak in this voice (so PSOLA never
        shifts far), and above all within MIDI ``lowest``..``highest`` (G2..C6)."""
        target = 69 + 12 * np.log2(self.speech_f0(voice) * lift / 440.0)
        pitches = [n.pitch for n in song.notes]
        shift = int(12 * round((target - float(np.median(pitches))) / 12))
        low_hz, high_hz = self._espeak_range(voice)
        reachable = (int(np.ceil(hz_to_midi(low_hz / 1.5))), int(np.floor(hz_to_midi(high_hz * 1.5))))
        for lo, hi in (reachable, (lowest, highest)):  # the second, hard bound is applied last and wins
            while min(pitches) + shift < lo and max(pitches) + shift + 12 <= hi:
                shift += 12
            while max(pitches) + shift > hi and min(pitches) + shift - 12 >= lo:
                shift -= 12
        return shift

    def _median_f0(self, voice: Voice) -> float:
        import parselmouth

        wav, sr = self.tts.synthesize("la la la, one two three" if voice.language != "zh" else "啦啦啦，一二三", voice)
        f0 = parselmouth.Sound(wav.astype(np.float64), sr).to_pitch(0.01, 40, 1000).selected_array["frequency"]
        return float(np.median(f0[f0 > 0])) if (f0 > 0).any() else 150.0

    def _espeak_range(self, voice: Voice) -> tuple[float, float]:
        """Median F0 of the voice at espeak-ng pitch 0 and at 99 (measured once per voice)."""
        key = replace(voice, pitch=0)
        if key not in self._range:
            self._range[key] = (self._median_f0(key), self._median_f0(replace(voice, pitch=99)))
        return self._range[key]

    def espeak_pitch(self, voice: Voice, hz: float) -> int:
        """The espeak-ng pitch setting (0..99) whose speech sits nearest ``hz``.

        espeak-ng's F0 grows about exponentially with its pitch setting, and the setting
        moves F0 only, not the formants (the timbre). Speaking each syllable near its
        note leaves PSOLA a small shift: shifts of an octave or more make PSOLA repeat
        pulses unevenly, and the result sounds (and tracks) an octave low."""
        low, high = self._espeak_range(voice)
        if high <= low * 1.05:  # a variant that ignores the setting
            return voice.pitch
        return int(round(min(99.0, max(0.0, 99.0 * np.log(hz / low) / np.log(high / low)))))

    def _syllable(self, text: str, voice: Voice, hz: float):
        import parselmouth

        key = (text, voice, self.espeak_pitch(voice, hz))
        if key not in self._syllables:
            if len(self._syllables) >= 4096:  # a long job meets many (syllable, voice, pitch): bound the memory
                self._syllables.clear()
            wav, sr = self.tts.synthesize(text, replace(voice, pitch=key[2]))
            wav = _trim(wav, sr)
            self._syllables[key] = parselmouth.Sound(wav.astype(np.float64), sr)
        return self._syllables[key]

    def sing_note(self, note: Note, voice: Voice, length_s: float) -> tuple[np.ndarray, int]:
        """One syllable, re-pitched to the note and stretched to ``length_s`` seconds."""
        from parselmouth.praat import call

        sound = self._syllable(note.sound or note.lyric, voice, midi_to_hz(note.pitch))
        sr = int(sound.sampling_frequency)
        total = sound.xmax - sound.xmin
        span = _voiced_span(sound)
        manipulation = call(sound, "To Manipulation", 0.01, 60, 800)
        pitch_tier = call("Create PitchTier", "note", sound.xmin, sound.xmax)
        call(pitch_tier, "Add point", sound.xmin, midi_to_hz(note.pitch))  # one point: a constant F0
        call([manipulation, pitch_tier], "Replace pitch tier")
        durations = call("Create DurationTier", "fit", sound.xmin, sound.xmax)
        if span is None or span[1] - span[0] < 0.02:  # nothing to hold: stretch evenly
            call(durations, "Add point", sound.xmin, length_s / total)
        else:
            v0, v1 = span
            consonants = total - (v1 - v0)
            c = min(1.0, self.consonant_share * length_s / consonants) if consonants > 0 else 1.0
            k = (length_s - c * consonants) / (v1 - v0)
            eps = 0.002  # the tier interpolates linearly; keep the ramps short
            for t, f in ((sound.xmin, c), (v0 - eps, c), (v0, k), (v1, k), (v1 + eps, c), (sound.xmax, c)):
                if sound.xmin <= t <= sound.xmax:
                    call(durations, "Add point", t, f)
        call([manipulation, durations], "Replace duration tier")
        out = call(manipulation, "Get resynthesis (overlap-add)")
        wav = out.values[0].astype(np.float32)
        n = int(round(length_s * sr))
        wav = np.pad(wav, (0, max(0, n - len(wav))))[:n]
        rms = float(np.sqrt(np.mean(wav ** 2))) if wav.size else 0.0
        if rms > 1e-6:
            wav = wav * (self.level / rms)
        return wav, sr

    def sing(self, song: Song, voice: Voice, transpose: int | None = None) -> tuple[np.ndarray, int, Song]:
        """(waveform, rate, the song as sung): ``transpose`` semitones, or whole octaves
        to suit the voice when None."""
        validate(song)
        shift = self.octave_shift(song, voice) if transpose is None else transpose
        sung = song.transposed(shift) if shift else song
        validate(sung)
        xfade = self.crossfade_s
        pieces, sr = [], None
        for note in sung.notes:
            wav, sr = self.sing_note(note, voice, note.duration + xfade)
            pieces.append((note.start, wav))
        assert sr is not None
        out = np.zeros(int(round((sung.duration + xfade) * sr)) + 1, np.float32)
        nx = int(round(xfade * sr))
        for start, wav in pieces:
            wav = wav.copy()
            k = min(nx, len(wav) // 2)  # a note shorter than two crossfades fades over half its length
            wav[:k] *= _fade(k)
            wav[len(wav) - k:] *= _fade(k)[::-1]
            i = int(round(start * sr))
            out[i:i + len(wav)] += wav[:len(out) - i]
        peak = float(np.abs(out).max())
        if peak > 0.99:
            out *= 0.99 / peak
        return out, sr, sung


def pitch_accuracy(wav: np.ndarray, sr: int, song: Song, tolerance: float = 1.0,
                   margin_s: float = 0.03) -> tuple[float, int]:
    """(share of voiced frames within ``tolerance`` semitones of their note, voiced frames).

    Praat's pitch tracker on the sung audio; frames closer than ``margin_s`` to a note's
    edges are left out (the crossfades), as are unvoiced frames (consonants)."""
    import parselmouth

    lo = midi_to_hz(min(n.pitch for n in song.notes)) / 2
    hi = midi_to_hz(max(n.pitch for n in song.notes)) * 2
    pitch = parselmouth.Sound(wav.astype(np.float64), sr).to_pitch(0.01, max(40.0, lo), min(1500.0, hi))
    f0, times = pitch.selected_array["frequency"], pitch.xs()
    good = total = 0
    for n in song.notes:
        inside = (times >= n.start + margin_s) & (times <= n.end - margin_s) & (f0 > 0)
        if inside.any():
            error = np.abs(12 * np.log2(f0[inside] / midi_to_hz(n.pitch)))
            good += int((error <= tolerance).sum())
            total += int(inside.sum())
    return (good / total if total else 0.0), total
