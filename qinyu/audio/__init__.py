"""Audio I/O, resampling, Kaldi-style front ends and the SenseVoice encoder."""

from .io import AudioError, check_waveform, load_audio, resample, save_audio

__all__ = ["AudioError", "check_waveform", "load_audio", "resample", "save_audio"]
