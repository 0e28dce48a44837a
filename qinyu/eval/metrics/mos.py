"""MOS predictors (UTMOS, SingMOS, Sheet-SSQA) loaded from local folders only.

The paper's MOS numbers come from published predictors distributed as torch.hub
repositories. We never download them and never invent a number: ``load_mos`` takes a local
clone of the repository (with its checkpoint where the hub entry needs one) and loads it
with ``torch.hub.load(path, entry, source="local")``; the predictor's ``name`` says which
entry of which published repository was loaded from which folder. Anything missing raises
``ScorerMissing`` naming the folder or file and where the predictor is published.

| type    | published repository (entry)                        | input the entry expects          |
|---------|-----------------------------------------------------|----------------------------------|
| utmos   | tarepan/SpeechMOS v1.2.0 (``utmos22_strong``)        | ``model(wave[B, T], sr)``, any sr|
| singmos | South-Twilight/SingMOS (``singmos_pro``)             | ``model(wave[B, T], length[B])``, 16 kHz |
| sheet   | unilight/sheet (``default``)                         | ``predictor.predict(wav=tensor[T])``, 16 kHz |

A hub entry may still fetch its weights from the internet the first time (SpeechMOS
does, into ``$TORCH_HOME/hub/checkpoints``); offline, put them there beforehand, or the
load fails with ScorerMissing carrying the entry's own error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from qinyu.eval.judge import ScorerMissing


class MOSPredictor(Protocol):
    name: str

    def predict(self, wav: np.ndarray, sr: int) -> float: ...


@dataclass(frozen=True)
class PublishedMOS:
    title: str
    repo: str  # where it is published
    entry: str  # default hub entry
    sample_rate: int | None  # what we resample to before calling it (None: the model takes sr)


PUBLISHED = {
    "utmos": PublishedMOS("UTMOS22 strong", "https://github.com/tarepan/SpeechMOS (tag v1.2.0)", "utmos22_strong",
                          None),
    "singmos": PublishedMOS("SingMOS-Pro", "https://github.com/South-Twilight/SingMOS", "singmos_pro", 16000),
    "sheet": PublishedMOS("Sheet SSQA", "https://github.com/unilight/sheet", "default", 16000),
}


class HubMOS:
    """A torch.hub MOS model behind ``predict(wav, sr) -> float``."""

    def __init__(self, name: str, model, call: Callable, sample_rate: int | None):
        self.name, self.model, self._call, self.sample_rate = name, model, call, sample_rate

    def predict(self, wav: np.ndarray, sr: int) -> float:
        import torch

        from qinyu.audio.io import check_waveform, resample

        wav = check_waveform(wav, sr, self.name)
        if self.sample_rate is not None:
            wav, sr = resample(wav, sr, self.sample_rate), self.sample_rate
        with torch.inference_mode():
            score = self._call(self.model, torch.from_numpy(np.ascontiguousarray(wav)), sr)
        value = float(torch.as_tensor(score, dtype=torch.float64).reshape(-1)[0])
        if not np.isfinite(value):
            raise ValueError(f"{self.name}: predicted a non-finite MOS")
        return value


def _call_utmos(model, wav, sr):  # SpeechMOS: model(wave [B, T], sr) -> [B]
    return model(wav[None], sr)


def _call_singmos(model, wav, sr):  # SingMOS: model(wave [B, T], length [B]) -> [B]
    import torch

    return model(wav[None], torch.tensor([wav.shape[0]]))


def _call_sheet(model, wav, sr):  # Sheet: Predictor.predict(wav=1-D tensor) -> score
    return model.predict(wav=wav)


CALLS = {"utmos": _call_utmos, "singmos": _call_singmos, "sheet": _call_sheet}


def load_mos(spec: dict) -> MOSPredictor:
    """``{"type": "utmos" | "singmos" | "sheet", "path": LOCAL_DIR, "entry": optional hub entry}``."""
    kind = spec.get("type")
    if kind not in PUBLISHED:
        raise ValueError(f"unknown MOS predictor type {kind!r}; known: {', '.join(PUBLISHED)}")
    published = PUBLISHED[kind]
    entry = spec.get("entry") or published.entry
    where = f"{published.title} ({entry}) is published at {published.repo}; clone it and pass its folder as path"
    if not spec.get("path"):
        raise ScorerMissing(f"MOS predictor {kind}: no local folder configured. {where}")
    path = Path(spec["path"])
    if not path.is_dir():
        raise ScorerMissing(f"MOS predictor {kind}: folder {path} not found. {where}")
    if not (path / "hubconf.py").is_file():
        raise ScorerMissing(f"MOS predictor {kind}: {path / 'hubconf.py'} not found (not a torch.hub "
                            f"repository). {where}")
    import torch

    try:
        model = torch.hub.load(str(path), entry, source="local")
    except Exception as e:  # the entry's own failure (missing checkpoint, no network, ...)
        raise ScorerMissing(f"MOS predictor {kind}: torch.hub.load({str(path)!r}, {entry!r}, source='local') "
                            f"failed: {type(e).__name__}: {e}. {where}") from e
    if hasattr(model, "eval"):
        model.eval()
    name = f"{published.title} ({entry}, torch.hub local {path})"
    return HubMOS(name, model, CALLS[kind], published.sample_rate)
