"""Speaker similarity: cosine of two speaker embeddings, x 100 (the paper's "SS").

The embedder is pluggable: any object with ``embed(wav, sr) -> 1-D vector``. The paper
does not name its speaker-verification model; CAM++ (``qinyu.voice.campplus``, the
encoder VITA-QinYu itself conditions on) is the default, and Seed-TTS's WavLM-large ECAPA
can be plugged in through the same method. Reports must name the embedder used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qinyu.eval.judge import ScorerMissing

CAMPPLUS_PUBLISHED = ("CAM++ weights: file campplus_cn_common.bin of the modelscope model "
                      "iic/speech_campplus_sv_zh-cn_16k-common, or a folder written by SpeakerEncoder.save")


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    u = np.asarray(u, dtype=np.float64).ravel()
    v = np.asarray(v, dtype=np.float64).ravel()
    if u.shape != v.shape:
        raise ValueError(f"speaker embeddings differ in size: {u.size} vs {v.size}")
    if not (np.isfinite(u).all() and np.isfinite(v).all()):
        raise ValueError("speaker embedding is not finite")
    norm = np.linalg.norm(u) * np.linalg.norm(v)
    if norm == 0:
        raise ValueError("speaker embedding is all zeros; cosine similarity is undefined")
    return float(np.dot(u, v) / norm)


def speaker_similarity(a: np.ndarray, sr_a: int, b: np.ndarray, sr_b: int, embedder) -> float:
    """Cosine similarity x 100 of the embeddings of clips ``a`` and ``b`` (each at its own rate;
    the embedder resamples)."""
    return 100.0 * cosine(embedder.embed(a, sr_a), embedder.embed(b, sr_b))


def load_speaker_encoder(path, device: str = "cpu"):
    """The default embedder, CAM++, from local files: ``campplus_cn_common.bin`` (or a folder
    holding it, e.g. a converted qinyu checkpoint's companion folder) or a folder written by
    ``SpeakerEncoder.save``. Nothing is downloaded; missing files raise ScorerMissing."""
    from qinyu.voice.campplus import CONFIG_FILE, OFFICIAL_WEIGHTS, SpeakerEncoder

    if path is None:
        raise ScorerMissing(f"speaker similarity needs a speaker encoder; none configured. {CAMPPLUS_PUBLISHED}")
    path = Path(path)
    if path.is_file():
        return SpeakerEncoder.from_official(path, device=device)
    if (path / CONFIG_FILE).is_file():
        return SpeakerEncoder.load(path, device=device)
    if (path / OFFICIAL_WEIGHTS).is_file():
        return SpeakerEncoder.from_official(path, device=device)
    raise ScorerMissing(f"speaker encoder not found at {path} (looked for the file itself, {path / CONFIG_FILE} "
                        f"and {path / OFFICIAL_WEIGHTS}). {CAMPPLUS_PUBLISHED}")
