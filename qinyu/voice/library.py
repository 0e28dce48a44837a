"""The voice library: named 192-d speaker vectors in one SQLite file.

A voice is created from a reference clip (speaker encoder), a description
(text-to-timbre) or a vector, gets a stable id (``v_`` + 12 hex digits, kept for the
life of the voice), and can be listed, fetched by name or id, and deleted. SQLite in
WAL mode with a busy timeout makes concurrent writers from several processes safe.
Preset voices import from the reference ``spk2embeds`` format (a torch pickle of a dict
name -> 192-d tensor).
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPEAKER_DIM = 192
SOURCES = ("clip", "description", "vector", "preset")


class VoiceError(ValueError):
    pass


@dataclass(frozen=True)
class Voice:
    id: str
    name: str
    source: str  # how it was made: clip, description, vector, preset
    detail: str  # the clip path, the description, or where the vector came from
    vector: np.ndarray
    created: float

    def summary(self) -> dict:
        return {"id": self.id, "name": self.name, "source": self.source, "detail": self.detail,
                "norm": round(float(np.linalg.norm(self.vector)), 3), "created": self.created}


def default_library_path() -> Path:
    env = os.environ.get("QINYU_VOICE_LIBRARY")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "qinyu" / "voices.sqlite"


def check_vector(vector) -> np.ndarray:
    arr = np.asarray(vector, dtype=np.float32).reshape(-1)
    if arr.shape != (SPEAKER_DIM,):
        raise VoiceError(f"a speaker vector must have {SPEAKER_DIM} values, got {arr.size}")
    if not np.isfinite(arr).all():
        raise VoiceError("speaker vector holds NaN or infinite values")
    return arr


class VoiceLibrary:
    def __init__(self, path=None):
        self.path = Path(path) if path else default_library_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS voices (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, "
                       "source TEXT NOT NULL, detail TEXT NOT NULL, vector BLOB NOT NULL, created REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(str(self.path), timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as e:
            raise VoiceError(f"cannot open voice library {self.path}: {e}") from None
        return db

    # -- create --------------------------------------------------------------------------
    def add(self, name: str, vector, source: str = "vector", detail: str = "", replace: bool = False) -> Voice:
        if not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise VoiceError("a voice name must be a non-empty string of at most 128 characters")
        if source not in SOURCES:
            raise VoiceError(f"voice source {source!r} is not one of {SOURCES}")
        vec = check_vector(vector)
        voice = Voice(f"v_{uuid.uuid4().hex[:12]}", name.strip(), source, detail, vec, time.time())
        with self._connect() as db:
            try:
                if replace:
                    db.execute("DELETE FROM voices WHERE name = ?", (voice.name,))
                db.execute("INSERT INTO voices VALUES (?, ?, ?, ?, ?, ?)",
                           (voice.id, voice.name, source, detail, vec.tobytes(), voice.created))
            except sqlite3.IntegrityError:
                raise VoiceError(f"a voice named {voice.name!r} already exists (delete it first)") from None
        return voice

    def create_from_clip(self, name: str, path, speaker_encoder, **kw) -> Voice:
        from ..audio.io import load_audio

        wav, sr = load_audio(path)
        return self.add(name, speaker_encoder.embed(wav, sr), "clip", str(path), **kw)

    def create_from_description(self, name: str, description: str, timbre, seed: int = 0, **kw) -> Voice:
        return self.add(name, timbre.generate(description, seed=seed), "description", description, **kw)

    def import_presets(self, path, replace: bool = False) -> list[Voice]:
        """Import a reference ``spk2embeds*.pt`` file (dict name -> 192-d tensor)."""
        import torch

        try:
            table = torch.load(str(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise VoiceError(f"preset file not found: {path}") from None
        except Exception as e:  # torch raises several types for non-pickles
            raise VoiceError(f"cannot read preset voices from {path}: {e}") from None
        if not isinstance(table, dict):
            raise VoiceError(f"{path}: expected a dict of name -> 192-d tensor, got {type(table).__name__}")
        return [self.add(str(k), np.asarray(v, dtype=np.float32), "preset", str(path), replace=replace)
                for k, v in table.items()]

    # -- read / delete ---------------------------------------------------------------------
    @staticmethod
    def _row(row) -> Voice:
        return Voice(row[0], row[1], row[2], row[3], np.frombuffer(row[4], dtype=np.float32).copy(), row[5])

    def list(self) -> list[Voice]:
        with self._connect() as db:
            return [self._row(r) for r in db.execute("SELECT * FROM voices ORDER BY name")]

    def get(self, name_or_id: str) -> Voice:
        with self._connect() as db:
            row = db.execute("SELECT * FROM voices WHERE id = ? OR name = ?", (name_or_id, name_or_id)).fetchone()
        if row is None:
            raise VoiceError(f"no voice named {name_or_id!r} in {self.path}")
        return self._row(row)

    def delete(self, name_or_id: str) -> Voice:
        voice = self.get(name_or_id)
        with self._connect() as db:
            db.execute("DELETE FROM voices WHERE id = ?", (voice.id,))
        return voice
