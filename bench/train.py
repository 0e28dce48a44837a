"""Packing benchmark: on a mixed-length corpus of rendered spoken conversations,
(1) packing efficiency (share of real tokens in packs of max_length) and (2) training
throughput of the tiny model in real tokens per second, packed vs unpacked (one sample
per row, padded to the longest in the batch) — the unpacked run is the baseline.

Usage: python bench/train.py [--samples 400] [--max-length 1024] [--steps 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from qinyu.data.dataset import PackedData, collate_packs
from qinyu.layout import TokenLayout, byte_tokenizer
from qinyu.model import QinYuForConditionalGeneration, preset_config
from qinyu.model.loss import hybrid_loss_sums
from synthetic import spoken_conversations  # bench/synthetic.py (this script's folder)

def throughput(model, batches, layout) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens, start = 0, time.perf_counter()
    for b in batches:
        inputs = {k: v for k, v in b.items() if k not in ("labels", "audio_labels", "num_tokens")}
        sums = hybrid_loss_sums(model(**inputs).logits, b["labels"], b["audio_labels"], layout.first_audio_token_id)
        loss = sums.text_sum / max(sums.text_count, 1) + sums.audio_sums.mean() / max(sums.audio_count, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tokens += b["num_tokens"]
    return tokens / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    tok = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    items = spoken_conversations(args.samples, 0, tok, layout)
    lengths = [len(it) for it in items]
    data = PackedData([(items, 1.0)], args.max_length, seed=0)
    packs = data.epoch(0)
    eff = data.efficiency()
    print(f"{len(items)} conversations, {min(lengths)}..{max(lengths)} tokens (mean {np.mean(lengths):.0f}); "
          f"{len(packs)} packs of <= {args.max_length} tokens")
    print(f"packing efficiency: {eff:.1%} of pack tokens are real (target >= 95%)")
    torch.manual_seed(0)
    model = QinYuForConditionalGeneration(preset_config("tiny", layout)).train()
    per_step = 2
    packed = [collate_packs(packs[i:i + per_step], layout.im_end)
              for i in range(0, min(len(packs), per_step * args.steps), per_step)]
    n_samples = sum(len(p) for b in range(len(packed)) for p in packs[b * per_step:(b + 1) * per_step])
    singles = [[it] for it in items[:n_samples]]
    rows = max(1, n_samples // len(packed))
    unpacked = [collate_packs(singles[i:i + rows], layout.im_end) for i in range(0, len(singles), rows)]
    real_packed = sum(b["num_tokens"] for b in packed)
    real_unpacked = sum(b["num_tokens"] for b in unpacked)
    pad_unpacked = sum(b["input_ids"].numel() for b in unpacked)
    base = throughput(model, unpacked, layout)
    fast = throughput(model, packed, layout)
    print(f"same {n_samples} conversations ({real_packed} real tokens) in {len(packed)} packed batches vs "
          f"{len(unpacked)} unpacked batches ({real_unpacked / pad_unpacked:.1%} of unpacked tokens are real)")
    print(f"{'':<12}{'real tokens/s':>15}{'ratio':>8}")
    print(f"{'unpacked':<12}{base:>15.0f}{1.0:>8.2f}")
    print(f"{'packed':<12}{fast:>15.0f}{fast / base:>8.2f}")


if __name__ == "__main__":
    main()
