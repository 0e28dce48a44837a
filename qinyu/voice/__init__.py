"""Voices: CAM++ speaker vectors, text-to-timbre, and the voice library."""

from .campplus import CAMPPlus, SpeakerEncoder, SpeakerEncoderError
from .library import Voice, VoiceError, VoiceLibrary
from .timbre import TextEncoder, TextToTimbre, TimbreConfig, TimbreError, train_timbre

__all__ = [name for name in dir() if not name.startswith("_")]
