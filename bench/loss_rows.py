"""Output-layer benchmark: training steps per second of the qinyu-nano model with the hybrid
loss computed from the full logits (the baseline, run beside it: every position times the
whole vocabulary, as ``hybrid_loss_sums`` reads them) against logits computed only where
the loss reads them (``forward(..., return_loss_sums=True)``: text columns at positions
followed by a text label, codebook 1-7 columns at positions followed by an audio step).

The `nano` preset on packs of 1,024 tokens of rendered spoken conversations, 4 packs a step,
bf16 autocast, frozen audio encoder, as the speedrun's stages run. The same batches in the
same order for both, in alternating rounds (the best round of each counts); the first step
of each is a warm-up and is not timed. Prints the loss after each step of both paths: they
must agree.

Usage: python bench/loss_rows.py [--steps 8] [--rounds 2]
"""

from __future__ import annotations

import argparse

import torch

from synthetic import nano_setup, nano_stage_batches, nano_stage_model, stage_steps  # bench/synthetic.py


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (one more is the warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of both paths, alternating; the best counts")
    args = ap.parse_args()
    tok, layout, _, config = nano_setup()
    batches = nano_stage_batches(args.steps, tok, layout)
    positions = sum(b["labels"][:, 1:].numel() for b in batches)
    text = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    audio = sum(int((b["audio_labels"][:, 1:, 1:] != -100).any(-1).sum()) for b in batches)
    print(f"{torch.get_num_threads()} threads; nano preset, {len(batches) - 1} timed steps of 4 packs of 1,024 "
          f"tokens, bf16; vocabulary {layout.vocab_size}, of which {7 * 1032} codebook 1-7 columns; positions "
          f"followed by a text label {text / positions:.1%}, by an audio step {audio / positions:.1%}")
    best = {}
    for round_ in range(args.rounds):  # alternating, best of the rounds: the machine's speed drifts
        for name, rows_only in (("full logits", False), ("loss rows", True)):
            speed, losses = stage_steps(nano_stage_model(config), batches, layout, bf16=True, rows_only=rows_only)
            if name not in best or speed > best[name][0]:
                best[name] = (speed, losses)
    rows = [(name, *v) for name, v in best.items()]
    base = rows[0][1]
    print(f"best of {args.rounds} alternating rounds")
    print(f"{'':<12}{'tokens/s':>10}{'ratio':>7}  loss at each step")
    for name, speed, losses in rows:
        print(f"{name:<12}{speed:>10.0f}{speed / base:>7.2f}  " + " ".join(f"{x:.4f}" for x in losses))


if __name__ == "__main__":
    main()
