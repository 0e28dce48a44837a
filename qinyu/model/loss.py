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
    (column 0 unused: codebook 0 is in ``labels``). The rows and targets are ``loss_rows``'s,
    as in training's ``LossSums``; here each CE is a mean (or sum / ``num_items_in_batch``)."""
    tvs = int(first_audio_token_id)
    text_rows, text_targets, audio_rows, audio_targets = loss_rows(labels, audio_labels, tvs)
    text_logits, audio_logits = _logits_at_rows(logits, text_rows, audio_rows, tvs)
    text_loss = _ce(text_logits, text_targets, num_items_in_batch)
    if len(audio_targets):
        per_codebook = torch.stack([
            _ce(audio_logits[:, (q - 1) * CODEBOOK_SIZE:q * CODEBOOK_SIZE], audio_targets[:, q - 1], num_items_in_batch)
            for q in range(1, NUM_CODEBOOKS)])
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


def loss_rows(labels: torch.Tensor, audio_labels: torch.Tensor | None, first_audio_token_id: int):
    """Which positions the hybrid loss reads, and their targets. Position p's logits predict
    what stands at p + 1, so the rows are positions 0..L-2 of each sequence:

    * ``text_rows`` [B, L-1] bool: the next token has a text label; ``text_targets`` [N_t]
      are those labels in the text softmax's numbering (above the codebook 1-7 block,
      shifted down by it).
    * ``audio_rows`` [B, L-1] bool: the next position holds an audio step; ``audio_targets``
      [N_a, 7] are its codebooks 1..7 (in-codebook indices, -100 where absent)."""
    tvs = int(first_audio_token_id)
    text_labels = labels[:, 1:]
    text_rows = text_labels != IGNORE_INDEX
    text_targets = text_labels[text_rows]
    inside = (text_targets >= tvs) & (text_targets < tvs + AUDIO_BLOCK)
    if inside.any():
        bad = int(text_targets[inside][0])
        raise ValueError(f"text label {bad} is a codebook 1-7 token; those are predicted by the audio loss, not as text")
    text_targets = torch.where(text_targets >= tvs + AUDIO_BLOCK, text_targets - AUDIO_BLOCK, text_targets)
    if audio_labels is None:
        audio_rows = torch.zeros_like(text_rows)
        audio_targets = labels.new_zeros(0, NUM_CODEBOOKS - 1)
    else:
        targets = audio_labels[:, 1:, 1:]  # [B, L-1, 7]
        audio_rows = (targets != IGNORE_INDEX).any(-1)
        audio_targets = targets[audio_rows]
    return text_rows, text_targets, audio_rows, audio_targets


def _logits_at_rows(logits: torch.Tensor, text_rows: torch.Tensor, audio_rows: torch.Tensor, tvs: int):
    """From full logits [B, L, V], the rows ``loss_rows`` selects: (text rows over the text
    softmax, the vocabulary without the codebook 1-7 block; audio rows over that block)."""
    rows = logits[:, :-1]
    text_logits = rows[text_rows]
    text_logits = torch.cat([text_logits[:, :tvs], text_logits[:, tvs + AUDIO_BLOCK:]], dim=-1)
    return text_logits, rows[audio_rows][:, tvs:tvs + AUDIO_BLOCK]


def loss_sums_at_rows(text_logits: torch.Tensor, text_targets: torch.Tensor, audio_logits: torch.Tensor,
                      audio_targets: torch.Tensor) -> LossSums:
    """The hybrid loss's sums from the logits of the rows it reads only (``loss_rows``):
    ``text_logits`` [N_t, V - 7*1032] over the text softmax (the vocabulary without the
    codebook 1-7 block), ``audio_logits`` [N_a, 7*1032] over that block."""
    text_sum = F.cross_entropy(text_logits.float(), text_targets, ignore_index=IGNORE_INDEX, reduction="sum")
    audio_sums = torch.stack([
        F.cross_entropy(audio_logits[:, (q - 1) * CODEBOOK_SIZE:q * CODEBOOK_SIZE].float(), audio_targets[:, q - 1],
                        ignore_index=IGNORE_INDEX, reduction="sum")
        for q in range(1, NUM_CODEBOOKS)])
    return LossSums(text_sum, int((text_targets != IGNORE_INDEX).sum()), audio_sums, int(audio_targets.shape[0]))


def hybrid_loss_sums(logits: torch.Tensor, labels: torch.Tensor, audio_labels: torch.Tensor | None,
                     first_audio_token_id: int) -> LossSums:
    """``LossSums`` from full logits [B, L, V]. Training computes the same sums without the
    full logits (``QinYuForConditionalGeneration.forward(..., return_loss_sums=True)``)."""
    tvs = int(first_audio_token_id)
    text_rows, text_targets, audio_rows, audio_targets = loss_rows(labels, audio_labels, tvs)
    text_logits, audio_logits = _logits_at_rows(logits, text_rows, audio_rows, tvs)
    return loss_sums_at_rows(text_logits, text_targets, audio_logits, audio_targets)
