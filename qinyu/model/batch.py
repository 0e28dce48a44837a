"""Collate rendered sequences into a right-padded batch of tensors for the model."""

from __future__ import annotations

import numpy as np
import torch

from ..layout import IGNORE_INDEX, NUM_CODEBOOKS, RenderedSequence


def collate(sequences: list[RenderedSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: ids with ``pad_id``, labels with -100,
    audio steps with -1; ``attention_mask`` marks real positions."""
    if not sequences:
        raise ValueError("cannot collate an empty list of sequences")
    length = max(len(s) for s in sequences)
    batch = len(sequences)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((batch, length), dtype=torch.long)
    audio_steps = torch.full((batch, length, NUM_CODEBOOKS), -1, dtype=torch.long)
    audio_labels = torch.full((batch, length, NUM_CODEBOOKS), IGNORE_INDEX, dtype=torch.long)
    for i, s in enumerate(sequences):
        n = len(s)
        input_ids[i, :n] = torch.tensor(s.input_ids)
        labels[i, :n] = torch.tensor(s.labels)
        attention_mask[i, :n] = 1
        audio_steps[i, :n] = torch.from_numpy(np.asarray(s.audio_steps))
        audio_labels[i, :n] = torch.from_numpy(np.asarray(s.audio_labels))
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
            "audio_steps": audio_steps, "audio_labels": audio_labels}
