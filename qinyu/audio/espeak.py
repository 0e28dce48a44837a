"""Speech from espeak-ng (the Debian package), for synthetic corpora and tests."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np


class EspeakError(RuntimeError):
    pass


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160,
           amplitude: int = 100) -> tuple[np.ndarray, int]:
    """Synthesise ``text``; returns (float32 mono waveform, sample rate = 22050).

    ``voice`` is an espeak-ng voice with an optional variant (``en-us+f3``,
    ``cmn-latn-pinyin+m2``); pitch 0..99, speed in words per minute."""
    import soundfile as sf

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakError("espeak-ng is not installed (Debian package espeak-ng; `make` installs it)")
    cmd = [exe, "-v", voice, "-p", str(int(pitch)), "-s", str(int(speed)), "-a", str(int(amplitude)), "--stdout"]
    try:
        res = subprocess.run(cmd + [text], capture_output=True, check=True, timeout=60)
    except subprocess.CalledProcessError as e:
        raise EspeakError(f"espeak-ng failed for voice {voice!r}: {e.stderr.decode(errors='replace').strip()}") from None
    wav, sr = sf.read(io.BytesIO(res.stdout), dtype="float32")
    if wav.size == 0:
        raise EspeakError(f"espeak-ng produced no audio for voice {voice!r} and text {text[:40]!r}")
    return wav, sr
