"""CTC batching benchmark: steps per second of the nano audio encoder's CTC step with batches
of like-length utterances (``length_batches`` pools, the speedrun's ``encoder_length_pool``)
against random batches (the baseline, run beside it), on this machine's CPU.

The utterances have the lengths of the speedrun's encoder data (LFR frames, 5th to 95th
percentile of a run's `prepared/cache/extra`): 3,000 numbers said alone (11-27 frames) and
7,400 sentences, word sequences and questions (22-75). Features are random, targets a quarter
as many random tokens as frames; both batchings train the same encoder from the same
initialisation under bf16 autocast, as ``pretrain_audio_encoder`` does. Prints utterances per
second, the share of padded frames, and the ratio to random batches.

Usage: python bench/ctc_batching.py [--steps 40] [--pool 50]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qinyu.model import QinYuForConditionalGeneration
from qinyu.train.encoder_ctc import length_batches
from synthetic import nano_setup  # bench/synthetic.py (this script's folder)


def run(encoder, lengths, classes: int, pool: int, steps: int, batch_size: int = 32) -> tuple[float, float]:
    """(utterances per second over steps 2.., padded share of the frames)."""
    opt = torch.optim.AdamW(encoder.parameters(), lr=2e-3)
    batches = length_batches(lengths, batch_size, np.random.default_rng(0), pool)
    rng = np.random.default_rng(1)
    start, real, padded = None, 0, 0
    for step in range(steps + 1):
        if step == 1:  # the first step is a warm-up
            start = time.perf_counter()
        idx = next(batches)
        lens = torch.tensor([lengths[i] for i in idx])
        x = torch.randn(len(idx), int(lens.max()), 560)
        target_lengths = lens // 4
        targets = torch.from_numpy(rng.integers(0, classes - 1, int(target_lengths.sum())))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            frames, out_lengths = encoder(x, lens)
            logits = encoder.ctc.ctc_lo(frames)
        loss = F.ctc_loss(logits.float().log_softmax(-1).transpose(0, 1), targets, out_lengths, target_lengths,
                          blank=classes - 1, zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        opt.step()
        if step:
            real += int(lens.sum())
            padded += len(idx) * int(lens.max())
    return steps * batch_size / (time.perf_counter() - start), 1 - real / padded


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40, help="timed steps of each batching (one more is the warm-up)")
    ap.add_argument("--pool", type=int, default=50, help="batches per length-sorted pool")
    args = ap.parse_args()
    _, _, classes, config = nano_setup()
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(11, 28, 3000)) + list(rng.integers(22, 76, 7400))

    print(f"{torch.get_num_threads()} threads; nano SAN-M encoder, {len(lengths)} utterances, "
          f"{args.steps} timed steps of 32, bf16 autocast")
    rows = []
    for name, pool in (("random batches", 0), (f"length pools of {args.pool}", args.pool)):
        torch.manual_seed(0)
        encoder = QinYuForConditionalGeneration(config).audio_encoder.train()
        rows.append((name, *run(encoder, lengths, classes, pool, args.steps)))
    base = rows[0][1]
    print(f"{'':<22}{'utt/s':>8}{'padding':>9}{'ratio':>7}")
    for name, utts, pad in rows:
        print(f"{name:<22}{utts:>8.1f}{pad:>9.1%}{utts / base:>7.2f}")


if __name__ == "__main__":
    main()
