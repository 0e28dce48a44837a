"""``QinYuConfig``: everything needed to build a QinYu model, stored as ``config.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..layout import CODEBOOK_SIZE, NUM_CODEBOOKS, TokenLayout, check_schedule
from ..layout.interleave import DEFAULT_SCHEDULE

MODEL_TYPE = "qinyu"
NORM_TYPES = ("layer_norm", "rms_norm")


class ConfigError(ValueError):
    pass


@dataclass
class QinYuConfig:
    """Configuration of the hybrid LM.

    ``backbone`` is a transformers config dict (with its ``model_type``, e.g. ``qwen3``);
    ``token_layout`` holds the ids resolved from the checkpoint's tokenizer.
    ``trained`` is False for randomly initialised checkpoints, so no tool presents one
    as a trained model.
    """

    backbone: dict
    token_layout: dict
    audio_encoder: dict | None = None  # {"type": ..., **params}; None = no speech input
    audio_encoder_output_size: int = 512
    # nano option: the encoder emits CTC logits (last class the blank); keep one frame per CTC
    # token, left-aligned in the utterance's span, the rest zeros (``ctc_compress``)
    audio_ctc_compress: bool = False
    # nano option: each frame the LM reads also carries the LM's own text embeddings weighted by the
    # encoder's CTC posteriors over them (its ``ctc.ctc_lo`` head; the blank adds nothing), so a
    # frame where CTC hears a word looks like that word's token (``project_audio``)
    audio_ctc_embedding: bool = False
    # nano option (a qinyu extension; the reference injects the voice once, at ``<|speaker|>``):
    # every assistant audio step's input also carries the projected assistant voice, the vector of
    # the last ``<|speaker|>`` before the step in its sample (``QinYuForConditionalGeneration.
    # embed_inputs``; the engine gives each decode step its request's voice), so each step is
    # conditioned on the voice directly rather than through attention to one prompt position
    speaker_at_audio_steps: bool = False
    audio_projection_norm_type: str = "layer_norm"
    speaker_projection_norm_type: str = "layer_norm"
    use_speaker_embedding: bool = True
    speaker_embedding_size: int = 192
    num_codebooks: int = NUM_CODEBOOKS
    codebook_size: int = CODEBOOK_SIZE
    use_audio_heads: bool = False  # separate Linear(H, 1032) heads for codebooks 1..7
    interleave_schedule: list = field(default_factory=lambda: [list(p) for p in DEFAULT_SCHEDULE])
    # the speech codec: {"type": "nano" | "xy_tokenizer", "path": folder, relative to the checkpoint or absolute}
    codec: dict | None = None
    # user-speech front end CMVN (SenseVoice's am.mvn) and the speaker encoder that gives user voices
    # (a folder or campplus_cn_common.bin); paths relative to the checkpoint or absolute; None = not used
    cmvn: str | None = None
    speaker_encoder: str | None = None
    # the precision the speaker encoder ran in for the user voices the model was trained on ("fp32",
    # or "bf16": qinyu-nano's inputs, 2.6x faster on a CPU): sessions embed user voices the same way
    speaker_dtype: str = "fp32"
    # what a session uses when the user sets nothing: the system prompt the model was trained with
    # (None: the reference's inference template) and the assistant voice (a .npy 192-d vector,
    # relative to the checkpoint; None: zeros)
    system_prompt: str | None = None
    default_voice: str | None = None
    attn_implementation: str = "sdpa"
    trained: bool = False
    description: str = ""
    model_type: str = MODEL_TYPE

    def __post_init__(self):
        if self.model_type != MODEL_TYPE:
            raise ConfigError(f"model_type must be {MODEL_TYPE!r}, got {self.model_type!r}")
        if not isinstance(self.backbone, dict) or "model_type" not in self.backbone:
            raise ConfigError("config field 'backbone' must be a transformers config dict with a 'model_type'")
        self.layout  # validates token_layout
        if self.speaker_dtype not in ("fp32", "bf16"):
            raise ConfigError(f"config field 'speaker_dtype' must be 'fp32' or 'bf16', got {self.speaker_dtype!r}")
        for name in ("audio_projection_norm_type", "speaker_projection_norm_type"):
            if getattr(self, name) not in NORM_TYPES:
                raise ConfigError(f"config field {name!r} must be one of {NORM_TYPES}, got {getattr(self, name)!r}")
        if self.audio_ctc_embedding and self.audio_encoder is None:
            raise ConfigError("audio_ctc_embedding needs an audio encoder with a CTC head (config 'audio_encoder' is null)")
        if self.speaker_at_audio_steps and not self.use_speaker_embedding:
            raise ConfigError("speaker_at_audio_steps needs use_speaker_embedding = true")
        if (self.num_codebooks, self.codebook_size) != (NUM_CODEBOOKS, CODEBOOK_SIZE):
            raise ConfigError(f"only 8 codebooks x 1032 entries are supported, got {self.num_codebooks} x {self.codebook_size}")
        try:
            self.interleave_schedule = [list(p) for p in check_schedule(self.interleave_schedule)]
        except ValueError as e:
            raise ConfigError(f"config field 'interleave_schedule': {e}") from None
        vocab = self.backbone.get("vocab_size")
        if vocab is not None and vocab < self.layout.vocab_size:
            raise ConfigError(f"backbone vocab_size {vocab} is smaller than the token layout's {self.layout.vocab_size}")
        if self.codec is not None and not (isinstance(self.codec, dict) and "type" in self.codec
                                           and "path" in self.codec):
            raise ConfigError("config field 'codec' must be {'type': ..., 'path': ...}")
        if self.audio_encoder is not None and "type" not in self.audio_encoder:
            raise ConfigError("config field 'audio_encoder' must have a 'type'")

    @property
    def layout(self) -> TokenLayout:
        try:
            return TokenLayout.from_dict(self.token_layout)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config field 'token_layout': {e}") from None

    @property
    def hidden_size(self) -> int:
        return int(self.backbone["hidden_size"])

    @property
    def max_positions(self) -> int | None:
        return self.backbone.get("max_position_embeddings")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QinYuConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known: {sorted(names)}")
        missing = [n for n in ("backbone", "token_layout") if n not in d]
        if missing:
            raise ConfigError(f"config is missing required field(s) {missing}")
        return cls(**d)

    def save(self, path) -> None:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        _atomic_write_text(Path(path), text)

    @classmethod
    def load(cls, path) -> "QinYuConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
