"""The codec interface every speech codec of qinyu implements.

A codec turns a waveform into ``codes`` of shape (8, T) with values 0..1023 at
``frame_rate`` frames per second, and back. It is saved as a folder
(``codec.json`` naming its type, plus safetensors) and loaded by name with
:func:`load_codec`. ``stream_decoder()`` decodes a growing code stream chunk by chunk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CODEC_CONFIG = "codec.json"
CODEC_TYPES: dict[str, type] = {}


class CodecError(ValueError):
    pass


def register_codec(name: str):
    def wrap(cls):
        CODEC_TYPES[name] = cls
        cls.codec_type = name
        return cls
    return wrap


class Codec:
    codec_type = "abstract"
    num_codebooks = 8
    codebook_size = 1024
    frame_rate: float
    input_sample_rate: int
    output_sample_rate: int
    # True when decoding a few frames costs well under a millisecond, so a server may do it
    # inline on its event loop instead of paying a thread hop per step (the nano codec)
    cheap_streaming = False

    @property
    def samples_per_frame(self) -> float:
        """Output samples per code frame."""
        return self.output_sample_rate / self.frame_rate

    def encode(self, wav, sample_rate: int) -> np.ndarray:
        raise NotImplementedError

    def decode(self, codes) -> np.ndarray:
        raise NotImplementedError

    def stream_decoder(self, **options):
        """A decoder for a growing code stream: ``push(codes) -> samples``, ``flush()``."""
        from .streaming import ChunkedStreamDecoder

        return ChunkedStreamDecoder(self, **options)

    def save(self, directory) -> Path:
        raise NotImplementedError

    @classmethod
    def is_official_folder(cls, path: Path) -> bool:
        """Whether ``path`` holds this codec in its publisher's own layout."""
        return False

    @classmethod
    def load_official_folder(cls, path: Path) -> "Codec":
        raise NotImplementedError

    def check_codes(self, codes) -> np.ndarray:
        arr = np.asarray(codes)
        if arr.ndim != 2 or arr.shape[0] != self.num_codebooks:
            raise CodecError(f"codes must have shape ({self.num_codebooks}, T), got {tuple(arr.shape)}")
        if arr.size and arr.dtype.kind not in "iu":
            raise CodecError(f"codes must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        bad = np.argwhere((arr < 0) | (arr >= self.codebook_size))
        if len(bad):
            q, t = bad[0]
            raise CodecError(f"code out of range at codebook {q}, frame {t}: {arr[q, t]} "
                             f"(expected 0..{self.codebook_size - 1})")
        return arr


def load_codec(path) -> Codec:
    """Load a codec folder; its ``codec.json`` names the type."""
    path = Path(path)
    if not path.is_dir():
        raise CodecError(f"codec folder not found: {path}")
    cfg_path = path / CODEC_CONFIG
    if not cfg_path.is_file():
        for cls in CODEC_TYPES.values():  # an official release folder, e.g. xy_tokenizer.ckpt + its YAML
            if cls.is_official_folder(path):
                return cls.load_official_folder(path)
        raise CodecError(f"{path} is not a codec folder: {CODEC_CONFIG} is missing")
    try:
        cfg = json.loads(cfg_path.read_text())
        kind = cfg["type"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise CodecError(f"{cfg_path} is malformed: {e}") from None
    if kind not in CODEC_TYPES:
        raise CodecError(f"{cfg_path}: unknown codec type {kind!r}; known: {sorted(CODEC_TYPES)}")
    return CODEC_TYPES[kind].load(path)


def codec_for_checkpoint(checkpoint) -> Codec:
    """The codec a checkpoint's ``config.json`` names (``"codec": {"type", "path"}``);
    a relative path is resolved against the checkpoint folder."""
    checkpoint = Path(checkpoint)
    cfg_path = checkpoint / "config.json"
    try:
        spec = json.loads(cfg_path.read_text()).get("codec")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise CodecError(f"cannot read {cfg_path}: {e}") from None
    if not spec:
        raise CodecError(f"{cfg_path} names no codec (field 'codec'); this checkpoint cannot speak")
    path = Path(spec["path"])
    if not path.is_absolute():
        path = checkpoint / path
    codec = load_codec(path)
    if codec.codec_type != spec["type"]:
        raise CodecError(f"{cfg_path} names a {spec['type']!r} codec but {path} holds a {codec.codec_type!r} codec")
    return codec
