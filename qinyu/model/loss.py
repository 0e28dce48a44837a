"""The hybrid loss (paper Eq. 2-3), computed exactly as the reference computes it.

* **Text CE**: causal (logits at p predict labels[p+1]) over the vocabulary *without*
  the codebook 1-7 block ``[id(<|audio_1_0|>), +7*1032)``; labels above that block are
  shifted down by 7*1032. Audio steps carry their codebook-0 token as a text label, so
  codebook 0 is learned inside the text softmax.
* **Audio CE** for q = 1..7: at the position *before* each audio step (the one whose
  hidden state predicts that step's codebook 0), the 1032-wide slice of codebook q,
  with the step's in-codebook index as target (unshifted). Mean per codebook, then the
  mean over the 7 codebooks.
* **Total** = text CE + audio CE; no weights, no other terms.

With ``num_items_in_batch`` every CE is sum / num_items, as a stock HF Trainer passes
it (the reference's trainer is unpublished; its golden data covers both).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..layout import CODEBOOK_SIZE, IGNORE_INDEX, NUM_CODEBOOKS

AUDIO_BLOCK = (NUM_CODEBOOKS - 1) * CODEBOOK_SIZE  # codebooks 1..7, excluded from the text softmax


@dataclass
class HybridLoss:
    loss: torch.Tensor
    text_loss: torch.Tensor
    audio_loss: torch.Tensor
    audio_loss_per_codebook: torch.Tensor  # [7], or [0] when there is no audio


def _ce(logits, targets, num_items_in_batch):
    if num_items_in_batch is None:
        if targets.numel() == 0 or (targets == IGNORE_INDEX).all():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum") / num_items_in_batch


def hybrid_loss(logits: torch.Tensor, labels: torch.Tensor, audio_labels: torch.Tensor | None,
                first_audio_token_id: int, num_items_in_batch=None) -> HybridLoss:
    """``logits`` [B, L, V]; ``labels`` [B, L] (unshifted, -100 ignored);
    ``audio_labels`` [B, L, 8] in-codebook targets of the audio step at each position
    (column 0 unused: codebook 0 is in ``labels``)."""
    tvs = int(first_audio_token_id)
    text_logits = torch.cat([logits[..., :tvs], logits[..., tvs + AUDIO_BLOCK:]], dim=-1)
    text_labels = labels[:, 1:]
    inside = (text_labels >= tvs) & (text_labels < tvs + AUDIO_BLOCK)
    if inside.any():
        bad = int(text_labels[inside][0])
        raise ValueError(f"text label {bad} is a codebook 1-7 token; those are predicted by the audio loss, not as text")
    text_labels = torch.where(text_labels >= tvs + AUDIO_BLOCK, text_labels - AUDIO_BLOCK, text_labels)
    text_loss = _ce(text_logits[:, :-1].reshape(-1, text_logits.shape[-1]), text_labels.reshape(-1), num_items_in_batch)

    per_codebook = []
    if audio_labels is not None:
        # position p holds an audio step; its codebooks 1..7 are predicted at p - 1
        targets = audio_labels[:, 1:, 1:]  # [B, L-1, 7]
        has_step = (targets != IGNORE_INDEX).any(-1)
        if has_step.any():
            rows = logits[:, :-1][has_step]  # [N, V]
            targets = targets[has_step]  # [N, 7]
            for q in range(1, NUM_CODEBOOKS):
                start = tvs + (q - 1) * CODEBOOK_SIZE
                per_codebook.append(_ce(rows[:, start:start + CODEBOOK_SIZE], targets[:, q - 1], num_items_in_batch))
    if per_codebook:
        per_codebook = torch.stack(per_codebook)
        audio_loss = per_codebook.mean()
    else:
        per_codebook = logits.new_zeros(0, dtype=torch.float32)
        audio_loss = logits.new_zeros((), dtype=torch.float32)
    return HybridLoss(text_loss + audio_loss, text_loss, audio_loss, per_codebook)


@dataclass
class LossSums:
    """Unnormalised pieces of the hybrid loss, so that a global batch split across
    micro-batches and processes gives exactly the loss of the whole batch:
    loss = text_sum / text_count + mean_q(audio_sums[q]) / audio_count."""

    text_sum: torch.Tensor
    text_count: int
    audio_sums: torch.Tensor  # [7]
    audio_count: int


def hybrid_loss_sums(logits: torch.Tensor, labels: torch.Tensor, audio_labels: torch.Tensor | None,
                     first_audio_token_id: int) -> LossSums:
    tvs = int(first_audio_token_id)
    text_logits = torch.cat([logits[..., :tvs], logits[..., tvs + AUDIO_BLOCK:]], dim=-1)[:, :-1]
    text_labels = labels[:, 1:]
    text_labels = torch.where(text_labels >= tvs + AUDIO_BLOCK, text_labels - AUDIO_BLOCK, text_labels)
    text_sum = F.cross_entropy(text_logits.reshape(-1, text_logits.shape[-1]).float(), text_labels.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    text_count = int((text_labels != IGNORE_INDEX).sum())
    audio_sums = logits.new_zeros(NUM_CODEBOOKS - 1, dtype=torch.float32)
    audio_count = 0
    if audio_labels is not None:
        targets = audio_labels[:, 1:, 1:]
        has_step = (targets != IGNORE_INDEX).any(-1)
        audio_count = int(has_step.sum())
        if audio_count:
            rows, targets = logits[:, :-1][has_step], targets[has_step]
            audio_sums = torch.stack([
                F.cross_entropy(rows[:, tvs + (q - 1) * CODEBOOK_SIZE:tvs + q * CODEBOOK_SIZE].float(),
                                targets[:, q - 1], ignore_index=IGNORE_INDEX, reduction="sum")
                for q in range(1, NUM_CODEBOOKS)])
    return LossSums(text_sum, text_count, audio_sums, audio_count)
