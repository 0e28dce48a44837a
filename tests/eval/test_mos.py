"""MOS predictors load from local folders only: a missing folder names the predictor and where it
is published; a local torch.hub folder is loaded with source="local" and called the way the
published entry expects (here a stand-in hub repository written by the test)."""

import numpy as np
import pytest

from qinyu.eval.judge import ScorerMissing
from qinyu.eval.metrics.mos import load_mos


@pytest.mark.parametrize("kind, names", [
    ("utmos", ["UTMOS22 strong", "utmos22_strong", "tarepan/SpeechMOS", "v1.2.0"]),
    ("singmos", ["SingMOS", "singmos_pro", "South-Twilight/SingMOS"]),
    ("sheet", ["Sheet", "default", "unilight/sheet"]),
])
def test_missing_folder_names_the_predictor(tmp_path, kind, names):
    for spec in ({"type": kind}, {"type": kind, "path": str(tmp_path / "absent")}):
        with pytest.raises(ScorerMissing) as err:
            load_mos(spec)
        for name in names:
            assert name in str(err.value)
    assert str(tmp_path / "absent") in str(err.value)
    with pytest.raises(ScorerMissing, match="hubconf.py"):
        load_mos({"type": kind, "path": str(tmp_path)})  # a folder that is not a hub repository


def test_unknown_type():
    with pytest.raises(ValueError, match="known: utmos, singmos, sheet"):
        load_mos({"type": "dnsmos", "path": "."})


HUBCONF = '''
import torch

class Utmos(torch.nn.Module):  # records how it was called; "score" = number of samples / 1000
    calls = []
    def forward(self, wave, sr):
        Utmos.calls.append((tuple(wave.shape), sr))
        return torch.tensor([wave.shape[1] / 1000.0])

class SingMos(torch.nn.Module):
    calls = []
    def forward(self, wave, length):
        SingMos.calls.append((tuple(wave.shape), int(length[0])))
        return torch.tensor([[3.5]])

def utmos22_strong():
    return Utmos()

def singmos_pro():
    return SingMos()

def broken():
    raise RuntimeError("checkpoint download needs the network")
'''


def test_local_hub_folder_is_loaded_and_called_like_the_published_entry(tmp_path):
    (tmp_path / "hubconf.py").write_text(HUBCONF)
    utmos = load_mos({"type": "utmos", "path": str(tmp_path)})
    assert "utmos22_strong" in utmos.name and str(tmp_path) in utmos.name and "local" in utmos.name
    wav = np.zeros(24000, dtype=np.float32)
    assert utmos.predict(wav, 24000) == pytest.approx(24.0)  # UTMOS gets the native rate
    assert type(utmos.model).calls[-1] == ((1, 24000), 24000)
    singmos = load_mos({"type": "singmos", "path": str(tmp_path)})
    assert singmos.predict(wav, 24000) == 3.5
    assert type(singmos.model).calls[-1] == ((1, 16000), 16000)  # resampled to 16 kHz, with its length
    with pytest.raises(ScorerMissing, match="checkpoint download needs the network"):
        load_mos({"type": "utmos", "path": str(tmp_path), "entry": "broken"})
