"""The singing pipeline: spoken requests for songs, answered by singing.

Songs come as note lists (the built-in public-domain set in ``songs.py``, JSON files) or
MIDI files with lyrics, already split into segments (lines). For every song the job
plans: the whole song; each segment ("the second line of ..."); and the whole song and
one segment in a named voice ("... in a deep male voice"). For each item:
1. the request: the LLM phrases it in natural language from templates' slots (title,
   part, voice); a user voice speaks it;
2. the singing: the SVS sings the segment's notes and syllables in the requested voice
   (or the assistant's own voice when none is named), moved by whole octaves into that
   voice's register; the notes and word durations go into ``meta``;
3. a check: Praat's F0 of the result must sit on the notes (``min_pitch_accuracy`` of
   voiced frames within a semitone), else the item fails and says so.

A song that cannot be sung (overlapping notes, an empty lyric, ...) fails its own items
with the reason; the other songs are made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from .job import Item
from .llm import LLMError, parse_json_reply
from .songs import builtin_songs
from .svs import Singer, Song, SongError, file_key, pitch_accuracy, read_midi, song_from_dict
from .tts import Voice
from .voices import ASSISTANT_VOICES, user_voice

REQUEST_PROMPT = """You write what a user says to a voice assistant to ask it to sing.
The input is JSON: {"title": ..., "part": <a part of the song, or null>, "voice": <a voice, or null>,
"language": "en" | "zh"}.
Write one short, natural spoken request in that language for the song (only the part, if a part is given; in that
voice, if a voice is given).
Answer with JSON only: {"request": "..."}."""

# name -> (espeak-ng voice, how a user names it in English, in Mandarin)
SINGING_VOICES = {
    "bright-female": (Voice("bright-female", espeak="en-us", variant="f5", pitch=65, speed=150),
                      "a bright female voice", "明亮的女声"),
    "deep-male": (Voice("deep-male", espeak="en-us", variant="m3", pitch=28, speed=150),
                  "a deep male voice", "低沉的男声"),
    "child": (Voice("child", espeak="en-us", variant="Annie", pitch=88, speed=150), "a child's voice", "童声"),
    "old-man": (Voice("old-man", espeak="en-gb-scotland", variant="m1", pitch=30, speed=140),
                "an old man's voice", "老爷爷的声音"),
    "soft-female": (Voice("soft-female", espeak="en-us", variant="f3", pitch=58, speed=150),
                    "a soft, breathy female voice", "轻柔的女声"),
    "rough-male": (Voice("rough-male", espeak="en-us", variant="m7", pitch=40, speed=150),
                   "a rough male voice", "沙哑的男声"),
}


def _source_spec(source) -> dict:
    """How an item names its song: the note list itself, or a file and its hash."""
    if isinstance(source, Song):
        return {"song": source.to_dict()}
    if isinstance(source, dict):
        return {"song": source}
    path = Path(source)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
    return {"file": str(path), "sha": digest}


def load_song(spec: dict) -> Song:
    """The song an item names; ``SongError`` when it cannot be sung."""
    if "song" in spec:
        return song_from_dict(spec["song"], key=spec["song"].get("key"))
    path = Path(spec["file"])
    if not path.is_file():
        raise SongError(path.stem, [f"song file not found: {path}"])
    if path.suffix.lower() in (".mid", ".midi"):
        return read_midi(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise SongError(path.stem, [f"cannot read song file {path}: {e}"]) from None
    return song_from_dict(data, key=data.get("key") or path.stem)


def _key_of(source) -> str:
    if isinstance(source, Song):
        return source.key
    if isinstance(source, dict):
        return str(source.get("key") or file_key(str(source.get("title") or "song")))
    return file_key(Path(source).stem)


class SingingPipeline:
    name = "singing"

    def __init__(self, llm, tts, songs: list | None = None, singer: Singer | None = None,
                 voices: dict | None = None, min_pitch_accuracy: float = 0.8):
        self.llm = llm
        self.tts = tts
        self.songs = builtin_songs() if songs is None else list(songs)
        self.singer = singer or Singer()
        self.voices = voices or SINGING_VOICES
        self.min_pitch_accuracy = min_pitch_accuracy

    def config(self) -> dict:
        return {"llm": self.llm.describe(), "tts": self.tts.describe(), "min_pitch_accuracy": self.min_pitch_accuracy,
                "singer": {"crossfade_s": self.singer.crossfade_s, "consonant_share": self.singer.consonant_share}}

    def stats(self) -> dict:
        return dict(self.llm.stats)

    def items(self) -> list[Item]:
        items = []
        names = sorted(self.voices)
        for index, source in enumerate(self.songs):
            spec = _source_spec(source)
            try:
                song = load_song(spec)
            except SongError:
                # a song that cannot be sung still gets one item, which fails with the reason
                items.append(Item(f"sing-{_key_of(source)}-whole", {**spec, "part": None, "voice": None}))
                continue
            key = song.key
            items.append(Item(f"sing-{key}-whole", {**spec, "part": None, "voice": None}))
            for k in range(len(song.segments)):
                items.append(Item(f"sing-{key}-part{k + 1}", {**spec, "part": k, "voice": None}))
            # two named voices per song, taking turns over the songs so every voice is used
            v1, v2 = names[(2 * index) % len(names)], names[(2 * index + 1) % len(names)]
            k = index % len(song.segments)
            items.append(Item(f"sing-{key}-whole-{v1}", {**spec, "part": None, "voice": v1}))
            items.append(Item(f"sing-{key}-part{k + 1}-{v2}", {**spec, "part": k, "voice": v2}))
        return items

    def request(self, title: str, part: str | None, voice: str | None, language: str,
                extra: dict | None = None) -> tuple[str, str]:
        payload = json.dumps({"title": title, "part": part, "voice": voice, "language": language, **(extra or {})},
                             ensure_ascii=False)
        value = parse_json_reply(self.llm.complete(REQUEST_PROMPT, payload, task="song_request"), "song request")
        text = value.get("request") if isinstance(value, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise LLMError(f"song request: expected {{\"request\": text}}, got {str(value)[:200]}")
        return text.strip(), str(value.get("phrasing", ""))

    # hooks: a subclass that plans its items (the nano corpus) overrides these instead of make()
    def user_voice_for(self, item: Item, language: str) -> Voice:
        """The voice that speaks the request: one of many, picked by the item's id."""
        return user_voice(language, item.id)

    def request_extra(self, item: Item) -> dict:
        """More fields for the request's LLM payload, after title, part, voice and language: none."""
        return {}

    def sample_meta(self, item: Item, meta: dict) -> dict:
        """The ``meta`` the sample is written with; a subclass may add its own bookkeeping."""
        return meta

    def make(self, item: Item, out) -> list[dict]:
        spec = item.spec
        song = load_song(spec)
        if spec["part"] is not None and not 0 <= spec["part"] < len(song.segments):
            raise SongError(song.title, [f"segment {spec['part'] + 1} does not exist"])
        part = song.segments[spec["part"]] if spec["part"] is not None else None
        sung_part = song.part(part) if part is not None else song
        lang = song.language
        if spec["voice"]:
            voice, en_name, zh_name = self.voices[spec["voice"]]
            voice_words = zh_name if lang == "zh" else en_name
        else:
            voice, voice_words = ASSISTANT_VOICES["en"], None
        if lang == "zh":  # the same formant set, speaking through the Mandarin voice
            voice = replace(voice, language="zh", espeak="cmn-latn-pinyin")
        request, phrasing = self.request(song.title, part.name if part else None, voice_words, lang,
                                         self.request_extra(item))
        asker = self.user_voice_for(item, lang)
        wav, sr = self.tts.synthesize(request, asker)
        request_path = out.save_wav("request", wav, sr)
        singing, rate, sung = self.singer.sing(sung_part, voice)
        accuracy, frames = pitch_accuracy(singing, rate, sung)
        if accuracy < self.min_pitch_accuracy:
            raise SongError(song.title, [f"sung pitch accuracy {accuracy:.2f} is below {self.min_pitch_accuracy} "
                                         f"({frames} voiced frames)"])
        song_path = out.save_wav("song", singing, rate)
        lyrics = sung.lyrics().replace("\n", "，" if lang == "zh" else ", ")
        return [{"id": item.id, "task": "singing",
                 "messages": [{"role": "user", "content": "<|audio|>"},
                              {"role": "assistant", "content": lyrics + "<|audio|>"}],
                 "audios": [request_path, song_path],
                 "meta": self.sample_meta(item, {
                     "song": song.key, "title": song.title, "language": lang,
                     "part": part.name if part else "the whole song", "voice": voice.name,
                     "voice_words": voice_words, "request": request, "phrasing": phrasing,
                     "user_voice": asker.name, "transpose": sung.notes[0].pitch - sung_part.notes[0].pitch,
                     "pitch_accuracy": round(accuracy, 4),
                     "notes": [[n.pitch, round(n.start, 4), round(n.duration, 4), n.lyric] for n in sung.notes],
                     "words": [[w, round(s, 4), round(d, 4)] for w, s, d in sung.words()],
                     "transcripts": [request, lyrics]})}]
