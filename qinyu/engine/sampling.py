"""Choosing the next token: the text/codebook-0 token from the shared softmax, and
codebooks 1..7 from their own 1032-wide slices.

Greedy by default (temperature 0), like the reference. A repetition penalty over the
codebook-0 ids of the last N audio steps applies, as in the reference, only when the
first choice is an audio token: negative logits are multiplied by the penalty,
positive ones divided, and the choice is made again."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    repetition_penalty: float = 1.1
    repetition_window: int = 5  # codebook-0 ids of the last N audio steps
    max_steps: int = 1024  # text and audio steps share the budget, as in the reference
    seed: int = 0
    # None: free-running like the reference (the model keeps the 1/8/4/8 rhythm by itself);
    # a schedule such as [[1, 8], [4, 8]]: the rhythm is enforced by masking
    enforce_schedule: list | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.repetition_window < 0 or self.max_steps <= 0:
            raise ValueError("top_k and repetition_window must be >= 0 and max_steps > 0")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")


def pick(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One id from a 1-D logits vector (already masked to the allowed range)."""
    if params.temperature == 0:
        return int(logits.argmax())
    scores = logits.float() / params.temperature
    if params.top_k:
        kth = torch.topk(scores, min(params.top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1:
        sorted_scores, order = scores.sort(descending=True)
        probs = sorted_scores.softmax(-1)
        cut = probs.cumsum(-1) - probs > params.top_p  # keep the smallest set reaching top_p
        scores[order[cut]] = float("-inf")
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))


def penalise(logits: torch.Tensor, ids: list[int], penalty: float) -> torch.Tensor:
    logits = logits.clone()
    if ids:
        idx = torch.tensor(sorted(set(ids)), device=logits.device)
        vals = logits[idx]
        logits[idx] = torch.where(vals < 0, vals * penalty, vals / penalty)
    return logits
