"""Speaker similarity: the cosine arithmetic through a stand-in embedder (an interface test),
a real (tiny, randomly initialised) CAM++ encoder, and loading the default encoder."""

import numpy as np
import pytest
import torch

from qinyu.eval.judge import ScorerMissing
from qinyu.eval.metrics.speaker import load_speaker_encoder, speaker_similarity
from qinyu.voice.campplus import GOLDEN_TINY_CONFIG, CAMPPlus, SpeakerEncoder


class VectorEmbedder:
    """Stand-in embedder: the "clip" is its own embedding, so cosines are known exactly."""

    def embed(self, wav, sr):
        return np.asarray(wav, dtype=np.float32)


def test_cosine_times_100_of_known_vectors():
    e = VectorEmbedder()
    assert speaker_similarity(np.array([1.0, 0.0]), 16000, np.array([1.0, 0.0]), 24000, e) == pytest.approx(100.0)
    assert speaker_similarity(np.array([1.0, 0.0]), 16000, np.array([1.0, 1.0]), 16000, e) == pytest.approx(
        100 / np.sqrt(2))  # 45 degrees: 70.71
    assert speaker_similarity(np.array([1.0, 0.0]), 16000, np.array([0.0, 3.0]), 16000, e) == pytest.approx(0.0)
    assert speaker_similarity(np.array([2.0, 0.0]), 16000, np.array([-1.0, 0.0]), 16000, e) == pytest.approx(-100.0)
    with pytest.raises(ValueError, match="all zeros"):
        speaker_similarity(np.zeros(2), 16000, np.ones(2), 16000, e)
    with pytest.raises(ValueError, match="differ in size"):
        speaker_similarity(np.ones(2), 16000, np.ones(3), 16000, e)


@pytest.fixture(scope="module")
def tiny_campplus():
    torch.manual_seed(0)
    model = CAMPPlus.from_config(GOLDEN_TINY_CONFIG)
    # random running statistics, so the batch norms are not the identity
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return SpeakerEncoder(model)


def test_real_campplus_same_clip_is_100(tiny_campplus):
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    clip = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(16000)).astype(np.float32)
    other = (0.3 * rng.standard_normal(16000)).astype(np.float32)
    same = speaker_similarity(clip, 16000, clip.copy(), 16000, tiny_campplus)
    assert same == pytest.approx(100.0, abs=1e-4)
    # an untrained network maps everything to nearly one direction, but not exactly
    assert speaker_similarity(clip, 16000, other, 16000, tiny_campplus) < same - 1e-3


def test_load_speaker_encoder(tmp_path, tiny_campplus):
    with pytest.raises(ScorerMissing, match="campplus_cn_common.bin"):
        load_speaker_encoder(None)
    with pytest.raises(ScorerMissing, match="nowhere"):
        load_speaker_encoder(tmp_path / "nowhere")
    tiny_campplus.save(tmp_path / "enc")
    loaded = load_speaker_encoder(tmp_path / "enc")
    assert isinstance(loaded, SpeakerEncoder) and loaded.config == GOLDEN_TINY_CONFIG
