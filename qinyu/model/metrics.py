"""Teacher-forced accuracy of the hybrid LM, per stream: text tokens, and each of the
8 codebooks (codebook 0 from the text softmax, 1..7 from their own slices)."""

from __future__ import annotations

import torch

from ..layout import CODEBOOK_SIZE, IGNORE_INDEX, NUM_CODEBOOKS, TokenLayout
from .loss import AUDIO_BLOCK


@torch.no_grad()
def teacher_forced_accuracy(logits: torch.Tensor, labels: torch.Tensor, audio_labels: torch.Tensor | None,
                            layout: TokenLayout) -> dict[str, float]:
    """Returns ``{"text": acc, "cb0": acc, ..., "cb7": acc}`` (keys only for streams that
    have labels). Predictions follow decoding: text/cb0 by argmax over the text softmax,
    codebook q >= 1 by argmax within its slice, at the position before the step."""
    first = layout.first_audio_token_id
    pred_logits = logits[:, :-1].float().clone()
    pred_logits[..., first:first + AUDIO_BLOCK] = float("-inf")
    pred = pred_logits.argmax(-1)
    target = labels[:, 1:]
    valid = target != IGNORE_INDEX
    is_cb0 = (target >= layout.audio_base) & (target < first)
    out = {}
    for name, mask in (("text", valid & ~is_cb0), ("cb0", valid & is_cb0)):
        if mask.any():
            out[name] = (pred[mask] == target[mask]).float().mean().item()
    if audio_labels is not None:
        steps = audio_labels[:, 1:]
        has = (steps[..., 1:] != IGNORE_INDEX).any(-1)
        rows = logits[:, :-1][has]
        for q in range(1, NUM_CODEBOOKS):
            if has.any():
                start = first + (q - 1) * CODEBOOK_SIZE
                guess = rows[:, start:start + CODEBOOK_SIZE].argmax(-1)
                out[f"cb{q}"] = (guess == steps[has][:, q]).float().mean().item()
    return out
