"""Singing voice synthesis: notes, songs, MIDI, and the sung pitch measured with Praat."""

import numpy as np
import pytest

from qinyu.audio.espeak import espeak_available
from qinyu.data.synth.songs import builtin_songs, twinkle, two_tigers
from qinyu.data.synth.svs import (Segment, Singer, SongError, midi_to_hz, note_to_midi, read_midi, song_from_dict,
                                  song_from_phrases, write_midi)
from qinyu.data.synth.tts import Voice

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def measured_note_accuracy(wav, sr, song, margin_s=0.03):
    """Per note: (voiced frames, frames within 1 semitone of the note), from Praat's pitch
    tracker run here, independently of the library's own check."""
    import parselmouth

    pitch = parselmouth.Sound(wav.astype(np.float64), sr).to_pitch(0.01, 50, 1200)
    f0, t = pitch.selected_array["frequency"], pitch.xs()
    out = []
    for n in song.notes:
        sel = (t > n.start + margin_s) & (t < n.end - margin_s) & (f0 > 0)
        semitones = np.abs(12 * np.log2(f0[sel] / midi_to_hz(n.pitch)))
        out.append((int(sel.sum()), int((semitones <= 1.0).sum())))
    return out


def test_note_names():
    assert note_to_midi("C4") == 60 and note_to_midi("A4") == 69 and note_to_midi(69) == 69
    assert note_to_midi("C#4") == 61 == note_to_midi("Db4") and note_to_midi("G3") == 55 and note_to_midi("60") == 60
    assert abs(midi_to_hz(69) - 440.0) < 1e-9
    for bad in ("H4", "C", 128, -1, None, True):
        with pytest.raises(ValueError):
            note_to_midi(bad)


def test_builtin_songs_are_valid_and_segmented():
    songs = builtin_songs()
    assert len(songs) >= 6 and len({s.key for s in songs}) == len(songs)
    for s in songs:
        assert len(s.segments) >= 4 and s.duration > 10
        assert sum(seg.last - seg.first + 1 for seg in s.segments) == len(s.notes)
    t = twinkle()
    assert t.lyrics().splitlines()[0] == "Twinkle twinkle little star"
    assert t.words()[0] == ("Twinkle", 0.0, pytest.approx(1.2))  # two quarter notes at 100 bpm
    assert t.notes[1].lyric == "kle" and t.notes[1].sound == "kul"  # written one way, sung another
    assert two_tigers().lyrics().splitlines()[1] == "跑得快跑得快"


@needs_espeak
@pytest.mark.parametrize("voice", [Voice("female", variant="f2", pitch=55), Voice("male", variant="m3", pitch=35)],
                         ids=lambda v: v.name)
def test_sung_pitch_is_on_the_notes(voice):
    song = twinkle()
    first_two = song.part(Segment("the first two lines", 0, song.segments[1].last))
    wav, sr, sung = Singer().sing(first_two, voice)
    assert abs(len(wav) / sr - sung.duration) < 0.05
    per_note = measured_note_accuracy(wav, sr, sung)
    voiced = sum(v for v, _ in per_note)
    within = sum(w for _, w in per_note)
    print(f"{voice.name}: {within}/{voiced} voiced frames within a semitone ({within / voiced:.1%}), "
          f"transposed {sung.notes[0].pitch - first_two.notes[0].pitch:+d}")
    assert voiced > 0.5 * sung.duration / 0.01  # most of the song is sung, not silent
    assert within / voiced >= 0.8
    assert all(v > 0 and w / v >= 0.8 for v, w in per_note)  # every note, not just on average
    # the measure can fail: against the melody two semitones off, almost nothing matches
    off = measured_note_accuracy(wav, sr, sung.transposed(2))
    assert sum(w for _, w in off) / voiced < 0.2


@needs_espeak
def test_mandarin_song_is_sung():
    song = two_tigers()
    line = song.part(song.segments[1])
    wav, sr, sung = Singer().sing(line, Voice("zh", language="zh", espeak="cmn-latn-pinyin", variant="f2"))
    per_note = measured_note_accuracy(wav, sr, sung)
    assert sum(w for _, w in per_note) / sum(v for v, _ in per_note) >= 0.8


def test_bad_songs_name_every_problem():
    notes = [{"pitch": "C4", "start": 0.0, "duration": 0.5, "lyric": "la"},
             {"pitch": "D4", "start": 0.4, "duration": 0.5, "lyric": "la"},     # overlaps the first
             {"pitch": "E4", "start": 1.0, "duration": 0.5, "lyric": ""},       # empty lyric
             {"pitch": "F4", "start": 1.5, "duration": 0.0, "lyric": "la"}]     # zero duration
    with pytest.raises(SongError) as e:
        song_from_dict({"title": "broken", "notes": notes})
    text = str(e.value)
    assert "song 'broken'" in text and len(e.value.problems) == 3
    assert "notes 1 and 2 overlap" in text and "note 3 (E4 at 1.000 s): empty lyric" in text
    assert "note 4 (F4 at 1.500 s): duration must be positive" in text
    with pytest.raises(SongError, match="note 1: pitch must be a MIDI number or a note name"):
        song_from_dict({"title": "x", "notes": [{"pitch": "Q9", "start": 0, "duration": 1, "lyric": "la"}]})
    with pytest.raises(SongError, match="3 notes but 2 syllables"):
        song_from_phrases("x", "x", 120, [("line", "C4 D4 E4", "la la")])


def test_midi_round_trip_with_lyrics(tmp_path):
    song = twinkle()
    path = write_midi(song, tmp_path / "twinkle.mid", bpm=100)
    back = read_midi(path, title=song.title)
    assert [n.pitch for n in back.notes] == [n.pitch for n in song.notes]
    assert [(n.lyric, n.sound, n.joins_next) for n in back.notes] == [(n.lyric, n.sound, n.joins_next)
                                                                      for n in song.notes]
    assert np.allclose([n.start for n in back.notes], [n.start for n in song.notes], atol=2e-3)
    assert np.allclose([n.duration for n in back.notes], [n.duration for n in song.notes], atol=2e-3)
    assert [(s.name, s.first, s.last) for s in back.segments] == [(s.name, s.first, s.last) for s in song.segments]


def test_midi_without_lyrics_or_with_chords_is_reported(tmp_path):
    import mido

    midi = mido.MidiFile()
    track = mido.MidiTrack()
    midi.tracks.append(track)
    for note in (60, 62):
        track.append(mido.Message("note_on", note=note, velocity=80, time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=480))
    midi.save(str(tmp_path / "plain.mid"))
    with pytest.raises(SongError, match="no lyric events"):
        read_midi(tmp_path / "plain.mid")
    chord = mido.MidiFile()
    track = mido.MidiTrack()
    chord.tracks.append(track)
    track.append(mido.MetaMessage("lyrics", text="la", time=0))
    track.append(mido.Message("note_on", note=60, velocity=80, time=0))
    track.append(mido.MetaMessage("lyrics", text="li", time=0))
    track.append(mido.Message("note_on", note=64, velocity=80, time=0))  # a second voice at once
    track.append(mido.Message("note_off", note=60, velocity=0, time=480))
    track.append(mido.Message("note_off", note=64, velocity=0, time=0))
    chord.save(str(tmp_path / "chord.mid"))
    with pytest.raises(SongError, match="overlap"):
        read_midi(tmp_path / "chord.mid")
