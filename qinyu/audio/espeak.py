"""Speech from espeak-ng (the Debian package), for synthetic corpora and tests: `espeak` starts
the program for one utterance; `EspeakWorker` keeps its library loaded in a worker process."""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


# --- espeak-ng's C library, in a worker process of its own -----------------------------------
#
# Starting the espeak-ng program costs ~10 ms an utterance (loading the phoneme tables and the
# dictionary), 2/3 of a short sentence's whole time; the speedrun speaks ~17,000 utterances. The
# library (libespeak-ng.so.1, Debian libespeak-ng1, which espeak-ng depends on) loads them once.
# The calls are those of the program (its src/espeak-ng.c): synchronous output, the voice by
# name, rate / volume / pitch, then one synthesis with the program's flags. A fresh engine's
# first utterance is the program's to the sample; later ones differ a little in the pitch
# flutter, whose phase runs on from the utterance before (a static counter in the library's wave
# generator that no call resets), and in the length of the end pause. So each ``EspeakWorker`` is a process of its own with a fresh
# engine, speaking its requests in the order given: the same requests give the same audio,
# whatever ran before in the caller, and the synthesis runs on another core than the caller.

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_espeakRATE, _espeakVOLUME, _espeakPITCH = 1, 2, 3
_SYNTH_FLAGS = 0x100 | 0x1000  # espeakCHARS_AUTO | espeakPHONEMES | espeakENDPAUSE, as the program


class _EspeakVoice(ctypes.Structure):
    """espeak_VOICE (speak_lib.h), for ``espeak_SetVoiceByProperties``."""
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


class EspeakLibrary:
    """libespeak-ng loaded in this process (one engine; its state is global to the process)."""

    def __init__(self, path: str | None = None):
        path = path or ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        self.lib = ctypes.CDLL(path)  # OSError where it is not installed
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_EspeakVoice)]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0)
        if self.sample_rate <= 0:
            raise EspeakError(f"libespeak-ng failed to initialise ({path}): is espeak-ng-data installed?")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._callback = callback_type(self._receive)  # kept alive here: the library holds a bare pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _receive(self, samples, count, events) -> int:
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        return 0  # 0: go on

    def synthesize(self, text: str, voice: str, pitch: int, speed: int, amplitude: int) -> np.ndarray:
        """int16 samples at ``self.sample_rate``."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            # as the program: not a voice's name, so a language ("en-gb", with its variant)
            select = _EspeakVoice(languages=voice.encode())
            if self.lib.espeak_SetVoiceByProperties(ctypes.byref(select)) != 0:
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
        for parameter, value in ((_espeakRATE, speed), (_espeakVOLUME, amplitude), (_espeakPITCH, pitch)):
            self.lib.espeak_SetParameter(parameter, int(value), 0)
        data = text.encode()
        self._chunks = []
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _SYNTH_FLAGS, None, None)
        chunks, self._chunks = self._chunks, []
        if status != 0:
            raise EspeakError(f"espeak-ng synthesis failed (status {status}) for voice {voice!r}")
        if not chunks:
            raise EspeakError(f"espeak-ng produced no audio for voice {voice!r} and text {text[:40]!r}")
        return np.concatenate(chunks)


def _serve() -> None:
    """The worker (``python -m qinyu.audio.espeak``): a JSON request a line on stdin
    ([text, voice, pitch, speed, amplitude]); on stdout a JSON line ({"samples": n, "rate": r}
    or {"error": message}) then n int16 samples. Without the library, the program speaks."""
    try:
        engine = EspeakLibrary()
    except (OSError, EspeakError):
        engine = None
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        text, voice, pitch, speed, amplitude = json.loads(line)
        try:
            if engine is not None:
                samples, rate = engine.synthesize(text, voice, pitch, speed, amplitude), engine.sample_rate
            else:
                wav, rate = espeak(text, voice=voice, pitch=pitch, speed=speed, amplitude=amplitude)
                samples = np.round(wav * 32768.0).clip(-32768, 32767).astype(np.int16)
            reply = {"samples": int(samples.size), "rate": int(rate)}
        except EspeakError as e:
            samples, reply = np.zeros(0, np.int16), {"error": str(e)}
        out.write(json.dumps(reply).encode() + b"\n" + samples.astype("<i2").tobytes())
        out.flush()


class EspeakWorker:
    """espeak-ng's library in a process of its own (see above): ``submit`` requests, then take
    their results in the same order with ``result``; ``synthesize`` does both. Not for several
    threads at once (the order of their requests would decide the audio)."""

    def __init__(self):
        if not espeak_available():
            raise EspeakError("espeak-ng is not installed (Debian package espeak-ng; `make` installs it)")
        # the worker imports this package from where the caller found it, installed or not
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self._process = subprocess.Popen([sys.executable, "-m", "qinyu.audio.espeak"], env=env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pending = 0

    def submit(self, text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160, amplitude: int = 100) -> None:
        try:
            self._process.stdin.write(json.dumps([text, voice, int(pitch), int(speed), int(amplitude)]).encode() + b"\n")
            self._process.stdin.flush()
        except (OSError, ValueError):  # ValueError: closed here
            raise self._exited() from None
        self.pending += 1

    def result(self) -> tuple[np.ndarray, int]:
        """The next request's (float32 waveform, sample rate), as ``espeak`` returns them."""
        if not self.pending:
            raise EspeakError("no espeak-ng request is waiting for its result")
        header = self._process.stdout.readline()
        if not header:
            raise self._exited()
        self.pending -= 1
        reply = json.loads(header)
        if "error" in reply:
            raise EspeakError(reply["error"])
        data = self._process.stdout.read(2 * reply["samples"])
        if len(data) != 2 * reply["samples"]:
            raise self._exited()
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0, reply["rate"]  # as soundfile reads int16

    def _exited(self) -> EspeakError:
        return EspeakError(f"the espeak-ng worker process exited (code {self._process.poll()})")

    def synthesize(self, text: str, voice: str = "en-us", pitch: int = 50, speed: int = 160,
                   amplitude: int = 100) -> tuple[np.ndarray, int]:
        self.submit(text, voice, pitch, speed, amplitude)
        return self.result()

    def close(self) -> None:
        """Stop the worker; results not taken yet are dropped (the worker is stopped at once
        then: it could be waiting to send them)."""
        if self._process.poll() is None:
            if self.pending:
                self._process.kill()
            else:
                self._process.stdin.close()  # end of input: it exits
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            if not stream.closed:
                stream.close()
        self.pending = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    _serve()
