"""The hybrid LM over a transformers backbone, its config, projectors and loss."""

from .audio_encoder import ENCODERS, SimpleAudioEncoder, build_audio_encoder, register_encoder
from .batch import collate
from .config import ConfigError, QinYuConfig
from .loss import HybridLoss, hybrid_loss
from .modeling import CheckpointError, InputError, QinYuForConditionalGeneration, QinYuOutput
from .presets import PRESETS, new_checkpoint, preset_config
from .projector import Projector

__all__ = [name for name in dir() if not name.startswith("_")]
