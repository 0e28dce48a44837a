"""Training data: prepared samples rendered with ``qinyu.layout`` and packed.

Prepared samples (``qinyu data prepare`` output, one JSON object per line) hold the
messages plus, for each ``<|audio|>``, cached arrays: user speech features and CAM++
vector, or assistant codec codes; and the assistant voice vector. Rendering follows the
reference: the voice line goes into the system prompt when a voice vector exists,
assistant codes are delayed and interleaved, labels cover the last assistant turn when
it speaks (all assistant turns otherwise).

Packing puts several samples into one sequence of at most ``max_length`` tokens with
**no attention across samples**: positions restart at each sample and a block-diagonal
causal mask keeps every sample to itself, so a pack computes exactly what its samples
would compute alone (tested). First-fit over a window of samples keeps ≥ 95 % of the
tokens real on mixed lengths.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..layout import (
    IGNORE_INDEX, NUM_CODEBOOKS, AssistantSpeech, RenderedSequence, TokenLayout, UserSpeech, render, with_voice_prompt,
)

SPEAKER_DIM = 192


@dataclass
class Item:
    """One rendered sample with its audio inputs (features and speaker vectors in the
    order the sequence needs them)."""

    seq: RenderedSequence
    features: list[np.ndarray] = field(default_factory=list)
    speakers: list[np.ndarray] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.seq)


def read_prepared(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prepared data file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not valid JSON: {e.msg}") from None
            row["_base"], row["_where"] = str(path.parent), f"{path.name}:{n}"
            rows.append(row)
    return rows


def render_prepared(sample: dict, tokenizer, layout: TokenLayout, output_frames, schedule,
                    use_speaker_embedding: bool = True) -> Item:
    """A prepared sample -> Item. ``output_frames(T_features)`` is the audio encoder's
    frame count for T feature frames (the number of placeholders)."""
    base = Path(sample["_base"])

    def array(rel):
        return np.load(base / rel) if rel else None

    audios, features, user_vectors = [], [], []
    for a in sample.get("audio", []):
        if a["role"] == "user":
            feats = array(a["features"]).astype(np.float32)
            features.append(feats)
            audios.append(UserSpeech(int(output_frames(len(feats)))))
            vec = array(a.get("speaker"))
            user_vectors.append(np.zeros(SPEAKER_DIM, np.float32) if vec is None else vec.astype(np.float32))
        else:
            audios.append(AssistantSpeech(array(a["codes"])))
    messages = [{"role": m["role"], "content": m["content"]} for m in sample["messages"]]
    voice = array(sample.get("voice"))
    if use_speaker_embedding and voice is not None:
        messages = with_voice_prompt(messages)
    seq = render(messages, tokenizer, layout, audios, schedule=schedule)
    speakers, users = [], iter(user_vectors)
    if not use_speaker_embedding:  # placeholders keep their plain token embeddings
        return Item(seq, features, [], sample.get("_where", ""))
    for p in seq.speaker_positions:
        if seq.input_ids[p] == layout.speaker:
            speakers.append(voice.astype(np.float32) if voice is not None else np.zeros(SPEAKER_DIM, np.float32))
        else:
            speakers.append(next(users, np.zeros(SPEAKER_DIM, np.float32)))
    return Item(seq, features, speakers, sample.get("_where", ""))


def first_fit(lengths: list[int], max_length: int, window: int = 256) -> list[list[int]]:
    """Pack item indices (in the given order, window by window) into bins of at most
    ``max_length`` tokens: each item goes into the first open bin it fits, longest
    first within a window."""
    packs: list[list[int]] = []
    for start in range(0, len(lengths), window):
        idx = sorted(range(start, min(start + window, len(lengths))), key=lambda i: -lengths[i])
        bins: list[list[int]] = []
        room: list[int] = []
        for i in idx:
            for b, free in enumerate(room):
                if lengths[i] <= free:
                    bins[b].append(i)
                    room[b] -= lengths[i]
                    break
            else:
                bins.append([i])
                room.append(max_length - lengths[i])
        packs += bins
    return packs


class PackedData:
    """Rendered items from weighted files, packed per epoch in a seeded order.

    The global pack order is a pure function of (seed, epoch), so training resumes at
    any step without iterator state: step s uses packs [s*B, (s+1)*B)."""

    def __init__(self, items_by_file: list[tuple[list[Item], float]], max_length: int, seed: int = 0,
                 window: int = 256):
        self.files = []
        self.dropped = 0
        for items, weight in items_by_file:
            if weight < 0:
                raise ValueError(f"mixing weight must be >= 0, got {weight}")
            keep = [it for it in items if len(it) <= max_length]
            self.dropped += len(items) - len(keep)
            self.files.append((keep, float(weight)))
        self.max_length, self.seed, self.window = max_length, seed, window
        self._epochs: dict[int, list[list[Item]]] = {}
        self._pack_counts: dict[int, int] = {}  # packs per epoch, so a step finds its epoch without repacking
        per_epoch = sum(len(items) * int(w) + round((w - int(w)) * len(items)) for items, w in self.files)
        if per_epoch == 0:
            raise ValueError(f"no training sample is selected: {self.dropped} sample(s) longer than max_length "
                             f"{max_length} were dropped, and the mixing weights select none of the rest")

    def epoch(self, e: int) -> list[list[Item]]:
        if e not in self._epochs:
            rng = random.Random(self.seed * 100003 + e)
            chosen: list[Item] = []
            for items, weight in self.files:
                whole, frac = int(weight), weight - int(weight)
                chosen += items * whole + rng.sample(items, round(frac * len(items)))
            rng.shuffle(chosen)
            packs = first_fit([len(it) for it in chosen], self.max_length, self.window)
            rng.shuffle(packs)
            self._epochs = {e: [[chosen[i] for i in p] for p in packs]}  # keep one epoch in memory
            self._pack_counts[e] = len(packs)
        return self._epochs[e]

    def pack_count(self, e: int) -> int:
        if e not in self._pack_counts:
            self.epoch(e)
        return self._pack_counts[e]

    def packs_for_step(self, step: int, batch_size: int) -> list[list[Item]]:
        out, index = [], step * batch_size
        e = 0
        while len(out) < batch_size:
            count = self.pack_count(e)
            if index < count:
                out += self.epoch(e)[index:index + batch_size - len(out)]
                index = 0
            else:
                index -= count
            e += 1
        return out

    def efficiency(self, epoch: int = 0) -> float:
        packs = self.epoch(epoch)
        return sum(len(it) for p in packs for it in p) / (len(packs) * self.max_length)


def packed_attention_mask(segments: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """[B, L] segment ids (-1 = padding) -> [B, 1, L, L] additive mask: causal within a
    segment, nothing across segments (padding attends to itself only, to stay finite)."""
    length = segments.shape[1]
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=segments.device))
    same = segments[:, :, None] == segments[:, None, :]
    eye = torch.eye(length, dtype=torch.bool, device=segments.device)
    allowed = (causal & same) | eye
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def collate_packs(packs: list[list[Item]], pad_id: int, mask: bool = True) -> dict:
    """Packs -> model inputs: ids, labels, audio steps/labels, per-sample positions (each
    sample from 0, and a row's padding from 0 as one more span), the block-diagonal mask
    (``mask``; without it ``attention_mask`` is None, for ``qinyu.model.packed_attention``,
    which finds the spans from the positions), user features and speaker vectors in order."""
    length = max(sum(len(it) for it in p) for p in packs)
    b = len(packs)
    batch = {
        "input_ids": torch.full((b, length), pad_id, dtype=torch.long),
        "labels": torch.full((b, length), IGNORE_INDEX, dtype=torch.long),
        "audio_steps": torch.full((b, length, NUM_CODEBOOKS), -1, dtype=torch.long),
        "audio_labels": torch.full((b, length, NUM_CODEBOOKS), IGNORE_INDEX, dtype=torch.long),
        "position_ids": torch.zeros((b, length), dtype=torch.long),
    }
    segments = torch.full((b, length), -1, dtype=torch.long)
    features, speakers = [], []
    for i, pack in enumerate(packs):
        p = 0
        for j, it in enumerate(pack):
            n = len(it)
            s = it.seq
            batch["input_ids"][i, p:p + n] = torch.tensor(s.input_ids)
            batch["labels"][i, p:p + n] = torch.tensor(s.labels)
            batch["audio_steps"][i, p:p + n] = torch.from_numpy(np.asarray(s.audio_steps))
            batch["audio_labels"][i, p:p + n] = torch.from_numpy(np.asarray(s.audio_labels))
            batch["position_ids"][i, p:p + n] = torch.arange(n)
            segments[i, p:p + n] = j
            features += [torch.from_numpy(f) for f in it.features]
            speakers += [torch.from_numpy(v) for v in it.speakers]
            p += n
        batch["position_ids"][i, p:] = torch.arange(length - p)  # the padding: one more span of its own
    batch["attention_mask"] = packed_attention_mask(segments) if mask else None
    batch["audio_features"] = features or None
    batch["speaker_embeddings"] = torch.stack(speakers) if speakers else None
    batch["num_tokens"] = int((segments >= 0).sum())
    return batch
