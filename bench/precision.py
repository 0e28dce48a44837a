"""Precision benchmark: training steps per second of the qinyu-nano model under bf16
autocast against fp32 (the baseline, run beside it), on this machine's CPU.

(1) the SLM stages: the `nano` preset (Qwen3 4 x 192, frozen SenseVoice-SAN-M encoder)
    on packs of 1,024 tokens of rendered spoken conversations, 4 packs a step, as the
    speedrun's stages run (``Recipe.dtype``);
(2) the CTC step: the nano audio encoder alone, batches of 32 utterances of 30-60 LFR
    frames (``pretrain_audio_encoder(dtype=...)``).

The same batches in the same order for both precisions; the first step of each is a
warm-up and is not timed. Also prints the loss after the timed steps, so a precision that
breaks training shows.

Usage: python bench/precision.py [--steps 8] [--ctc-steps 20]
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from qinyu.model import QinYuForConditionalGeneration
from synthetic import nano_setup, nano_stage_batches, nano_stage_model, stage_steps  # bench/synthetic.py


def autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


def ctc_steps(encoder, batches, classes: int, dtype: str) -> tuple[float, float]:
    """(utterances per second over batches[1:], last CTC loss)."""
    opt = torch.optim.AdamW(encoder.parameters(), lr=2e-3)
    done, start, loss = 0, None, None
    for i, (x, lengths, targets, target_lengths) in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        with autocast(dtype):
            frames, out_lengths = encoder(x, lengths)
            logits = encoder.ctc.ctc_lo(frames)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)
        loss = F.ctc_loss(log_probs, targets, out_lengths, target_lengths, blank=classes - 1, zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += len(x) if i else 0
    return done / (time.perf_counter() - start), loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="timed SLM steps (one more is the warm-up)")
    ap.add_argument("--ctc-steps", type=int, default=20, help="timed CTC steps (one more is the warm-up)")
    args = ap.parse_args()
    tok, layout, classes, config = nano_setup()
    batches = nano_stage_batches(args.steps, tok, layout)
    rng = np.random.default_rng(1)
    ctc = []
    for _ in range(args.ctc_steps + 1):
        lengths = torch.from_numpy(rng.integers(30, 61, 32))
        x = torch.from_numpy(rng.standard_normal((32, int(lengths.max()), 560), dtype=np.float32))  # seeded
        target_lengths = torch.from_numpy(rng.integers(4, 12, 32))
        ctc.append((x, lengths, torch.from_numpy(rng.integers(0, classes - 1, int(target_lengths.sum()))),
                    target_lengths))

    print(f"{torch.get_num_threads()} threads; nano preset, {len(batches) - 1} timed steps of 4 packs of 1,024 "
          f"tokens; CTC: {len(ctc) - 1} timed batches of 32 utterances")
    rows = []
    for dtype in ("fp32", "bf16"):
        slm, slm_losses = stage_steps(nano_stage_model(config), batches, layout, bf16=dtype == "bf16")
        slm_loss = slm_losses[-1]
        torch.manual_seed(0)
        encoder = QinYuForConditionalGeneration(config).audio_encoder.train()
        utts, ctc_loss = ctc_steps(encoder, ctc, classes, dtype)
        rows.append((dtype, slm, slm_loss, utts, ctc_loss))
    base = rows[0]
    print(f"{'':<6}{'SLM tokens/s':>14}{'ratio':>7}{'loss':>8}{'CTC utt/s':>12}{'ratio':>7}{'CTC loss':>10}")
    for dtype, slm, slm_loss, utts, ctc_loss in rows:
        print(f"{dtype:<6}{slm:>14.0f}{slm / base[1]:>7.2f}{slm_loss:>8.4f}{utts:>12.1f}{utts / base[3]:>7.2f}"
              f"{ctc_loss:>10.4f}")


if __name__ == "__main__":
    main()
