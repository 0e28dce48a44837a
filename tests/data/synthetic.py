"""A synthetic *prepared* corpus (the format `qinyu data prepare` writes), made directly
from random arrays so data and training tests need no audio models."""

import json
from pathlib import Path

import numpy as np

REPLIES = ["Hello there!", "I can sing, too.", "It is sunny today.", "Nice to meet you.", "Yes.",
           "The train leaves at seven, so we should hurry up and pack our bags."]


def write_prepared(folder: Path, n: int = 12, seed: int = 0, name: str = "train") -> Path:
    rng = np.random.default_rng(seed)
    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        def save(kind, arr):
            rel = f"cache/{kind}-{seed}-{i}.npy"
            np.save(folder / rel, arr)
            return rel

        t_user = int(rng.integers(3, 9))
        t_codes = int(rng.integers(4, 16))
        feats = save("feat", rng.standard_normal((t_user, 560)).astype(np.float32))
        spk = save("spk", (rng.standard_normal(192) * 1.0).astype(np.float32))
        codes = save("codes", rng.integers(0, 1024, (8, t_codes)))
        voice = save("voice", rng.standard_normal(192).astype(np.float32))
        reply = REPLIES[i % len(REPLIES)]
        kind = i % 3
        if kind == 0:  # speech in, interleaved speech out
            messages = [{"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": reply + "<|audio|>"}]
            audio = [{"role": "user", "features": feats, "frames": t_user, "speaker": spk},
                     {"role": "assistant", "codes": codes, "frames": t_codes}]
        elif kind == 1:  # text in, speech only out
            messages = [{"role": "user", "content": "Say something."}, {"role": "assistant", "content": "<|audio|>"}]
            audio = [{"role": "assistant", "codes": codes, "frames": t_codes}]
        else:  # ASR: speech in, text out
            messages = [{"role": "user", "content": "Convert the speech to text.\n<|audio|>"},
                        {"role": "assistant", "content": reply}]
            audio = [{"role": "user", "features": feats, "frames": t_user, "speaker": spk}]
        lines.append({"id": f"{name}-{i}", "task": "chat", "messages": messages, "audio": audio,
                      "voice": voice if kind != 2 else None})
    path = folder / f"{name}.prepared.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path
