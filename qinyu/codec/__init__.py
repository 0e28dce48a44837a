"""Speech codecs behind one interface: 8 codebooks x 1024 codes per frame."""

from .base import CODEC_TYPES, Codec, CodecError, codec_for_checkpoint, load_codec, register_codec
from .nano import NanoCodec, NanoCodecConfig, shift_pitch
from .streaming import REFERENCE_SCHEDULE, ChunkedStreamDecoder
from .xy_tokenizer import XYTokenizer, official_params

__all__ = [name for name in dir() if not name.startswith("_")]
