"""Server settings: one dataclass, read from YAML or JSON (``qinyu serve --config``),
checked field by field so a typo names itself instead of being ignored."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    pass


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_sessions: int = 32
    max_session_seconds: float = 3600.0
    max_event_bytes: int = 1 << 20
    # events queued for a client that is not reading them (its socket full); past this the
    # session ends (close 1008 client_not_reading) instead of queueing without end
    max_outbox_events: int = 4096
    api_key: str | None = None
    allowed_origins: list[str] | None = None  # None: any origin
    max_batch: int = 16
    max_steps: int = 1024  # decode-step budget of one response (text and audio steps)
    library: str | None = None  # voice library file
    timbre: str | None = None  # text-to-timbre folder (voices from descriptions)
    # Silero VAD (the defaults are the reference's)
    vad_threshold: float = 0.7
    min_speech_ms: int = 200
    min_silence_ms: int = 500
    speech_pad_ms: int = 30
    interrupt_min_speech_ms: int = 500  # barge-in needs this much user speech
    turn_detection: str | None = "server_vad"  # the sessions' default: server_vad | semantic_vad | None (manual)
    turn_detector: dict | None = None  # {"type": "builtin"} | {"type": "ten", "path": DIR}
    asr: dict | None = None  # {"type": "slm"} | {"type": "whisper", "path": DIR, "language": "en"}
    max_history: int = 4  # turns of history in each prompt, as the reference
    first_chunk: int | None = None  # frames in the first streamed audio chunk (codec default when None)
    instructions: str | None = None  # the sessions' default system prompt
    role_description: str | None = None  # the sessions' default role

    def __post_init__(self):
        positive = ("port", "max_sessions", "max_session_seconds", "max_event_bytes", "max_outbox_events",
                    "max_batch", "max_steps", "min_silence_ms")
        for name in positive:
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ConfigError(f"server config: {name} must be a positive number, got {getattr(self, name)!r}")
        if not isinstance(self.vad_threshold, (int, float)) or not 0.15 < self.vad_threshold < 1:
            # speech ends below threshold - 0.15, which must stay positive
            raise ConfigError(f"server config: vad_threshold must be in (0.15, 1), got {self.vad_threshold!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigError("server config: api_key must be a non-empty string (or absent)")
        for name in ("min_speech_ms", "speech_pad_ms", "interrupt_min_speech_ms", "max_history"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"server config: {name} must be an integer >= 0, got {getattr(self, name)!r}")
        if self.turn_detection not in (None, "server_vad", "semantic_vad"):
            raise ConfigError(f"server config: turn_detection must be server_vad, semantic_vad or null, "
                              f"got {self.turn_detection!r}")
        if self.allowed_origins is not None and (not isinstance(self.allowed_origins, list)
                                                 or not all(isinstance(o, str) for o in self.allowed_origins)):
            raise ConfigError("server config: allowed_origins must be a list of origins like 'http://127.0.0.1:8000'")

    @classmethod
    def load(cls, path, **overrides) -> "ServerConfig":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read server config {path}: {e}") from None
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as e:  # json and yaml raise different types; both mean the same
            raise ConfigError(f"server config {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                              f"{e}") from None
        data = data or {}
        if not isinstance(data, dict):
            raise ConfigError(f"server config {path} must be a mapping of settings, got {type(data).__name__}")
        return cls.from_dict({**data, **overrides}, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "server config") -> "ServerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
