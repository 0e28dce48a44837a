"""Speech recognisers the server can use besides the model's own ASR prompt.

The default transcriber is the SLM itself ("Convert the speech to text.") on the
server's shared engine (see ``qinyu.server.realtime``). ``WhisperASR`` runs Whisper
through transformers from a local folder, as the reference web demo does with
whisper-large-v3 (it forces Chinese; here the language is a setting, None = detect).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ASRError(ValueError):
    pass


class WhisperASR:
    NEEDED = ("config.json", "preprocessor_config.json", "tokenizer_config.json")

    def __init__(self, path, language: str | None = None, device: str = "cpu", max_new_tokens: int = 128):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        path = Path(path)
        missing = [f for f in self.NEEDED if not (path / f).is_file()]
        if not path.is_dir() or missing or not (list(path.glob("*.safetensors")) or list(path.glob("*.bin"))):
            raise ASRError(f"Whisper folder {path} is incomplete (needs {', '.join(self.NEEDED)} and the weight "
                           "files); download e.g. openai/whisper-large-v3 and point the server config's asr.path at it")
        self.processor = WhisperProcessor.from_pretrained(path)
        self.model = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32).to(device).eval()
        self.language, self.max_new_tokens = language, max_new_tokens

    def transcribe(self, wav: np.ndarray, sample_rate: int = 16000) -> str:
        import torch

        if sample_rate != 16000:
            raise ASRError(f"Whisper takes 16 kHz audio, got {sample_rate} Hz")
        wav = np.asarray(wav, dtype=np.float32)
        window = 30 * 16000  # Whisper's input window: longer audio is transcribed window by window, not cut
        pieces = [wav[i:i + window] for i in range(0, max(len(wav), 1), window)]
        feats = self.processor(pieces, sampling_rate=16000, return_tensors="pt")
        kw = {"language": self.language, "task": "transcribe"} if self.language else {}
        with torch.no_grad():
            ids = self.model.generate(feats.input_features.to(self.model.device), max_new_tokens=self.max_new_tokens,
                                      **kw)
        return " ".join(t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)).strip()


def load_asr(spec: dict | None):
    """``None`` or ``{"type": "slm"}`` -> None (the server uses the model itself);
    ``{"type": "whisper", "path": DIR, "language": "en"}`` -> WhisperASR."""
    spec = spec or {"type": "slm"}
    kind = spec.get("type", "slm")
    if kind == "slm":
        return None
    if kind == "whisper":
        if not spec.get("path"):
            raise ASRError("asr type 'whisper' needs a 'path' to a Whisper model folder")
        return WhisperASR(spec["path"], language=spec.get("language"), device=spec.get("device", "cpu"))
    raise ASRError(f"unknown asr type {kind!r} (expected 'slm' or 'whisper')")
