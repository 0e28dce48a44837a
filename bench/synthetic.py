"""Synthetic spoken conversations for the training benchmarks (bench/train.py,
bench/precision.py, bench/loss_rows.py): random reply texts, random user-speech features and
codec codes of random lengths, rendered as training renders them. Shapes, not meaning. Also
the nano preset over a small BPE of the same words (bench/precision.py, bench/ctc_batching.py,
bench/loss_rows.py) and batches of packs of them as the speedrun's stages take them."""

from __future__ import annotations

import time
from contextlib import nullcontext

import numpy as np
import torch

from qinyu.data.dataset import Item
from qinyu.layout import AssistantSpeech, TokenLayout, UserSpeech, bpe_tokenizer, render, with_voice_prompt

WORDS = "the a voice song river morning train quiet bright window story mountain music friend".split()


def nano_setup():
    """(tokenizer, layout, CTC classes, config) of the nano preset over a 300-entry BPE of WORDS."""
    from qinyu.model import preset_config
    from qinyu.model.presets import ctc_classes

    tok = bpe_tokenizer([" ".join(WORDS)] * 50, 300)
    layout = TokenLayout.from_tokenizer(tok)
    classes = ctc_classes(tok)
    return tok, layout, classes, preset_config("nano", layout, classes)


def spoken_conversations(n: int, seed: int, tokenizer, layout) -> list[Item]:
    """``n`` one-turn conversations: a spoken question (5-59 frames of 560-d features), a reply
    of 2-39 words and 8-119 frames of codes, and two 192-d voice vectors."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        reply = " ".join(rng.choice(WORDS, int(rng.integers(2, 40))))
        frames, user = int(rng.integers(8, 120)), int(rng.integers(5, 60))
        seq = render(with_voice_prompt([{"role": "user", "content": "<|audio|>"},
                                        {"role": "assistant", "content": reply + "<|audio|>"}]),
                     tokenizer, layout, [UserSpeech(user), AssistantSpeech(rng.integers(0, 1024, (8, frames)))])
        items.append(Item(seq, [rng.standard_normal((user, 560)).astype(np.float32)],
                          [rng.standard_normal(192).astype(np.float32) for _ in range(2)]))
    return items


def nano_stage_batches(steps: int, tokenizer, layout, mask: bool = True) -> list[dict]:
    """``steps`` + 1 batches of 4 packs of 1,024 tokens (a speedrun stage step; the first is a
    warm-up) of ``spoken_conversations``, with the block-diagonal mask or (``mask`` false, for
    packed attention) without; exits when there are not enough."""
    from qinyu.data.dataset import PackedData, collate_packs

    packs = PackedData([(spoken_conversations(600, 0, tokenizer, layout), 1.0)], 1024, seed=0).epoch(0)
    batches = [collate_packs(packs[i:i + 4], layout.im_end, mask=mask) for i in range(0, 4 * (steps + 1), 4)]
    if len(batches) < steps + 1:
        raise SystemExit(f"only {len(batches)} batches of 4 packs; ask for fewer --steps")
    return batches


def nano_stage_model(config):
    """A fresh nano model (seed 0) as stages 1 and 2 train it: the audio encoder frozen, in eval mode."""
    from qinyu.model import QinYuForConditionalGeneration

    torch.manual_seed(0)
    model = QinYuForConditionalGeneration(config).train()
    for p in model.model.audio_model.parameters():
        p.requires_grad_(False)
    model.model.audio_model.eval()
    return model


def stage_steps(model, batches, layout, bf16: bool, rows_only: bool = False) -> tuple[float, list[float]]:
    """Train ``model`` on ``batches`` (AdamW, lr 1e-3): (real tokens per second over batches[1:],
    the first being a warm-up; the loss of every step). The loss is the hybrid loss's, from
    the full logits (``hybrid_loss_sums``) or, with ``rows_only``, from the logits of the rows
    it reads (``forward(..., return_loss_sums=True)``)."""
    from qinyu.model.loss import hybrid_loss_sums

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tokens, start, losses = 0, None, []
    for i, b in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            if rows_only:
                sums = model(**{k: v for k, v in b.items() if k != "num_tokens"}, return_loss_sums=True).loss_sums
            else:
                logits = model(**{k: v for k, v in b.items() if k not in ("labels", "audio_labels", "num_tokens")}
                               ).logits
        if not rows_only:
            sums = hybrid_loss_sums(logits.float(), b["labels"], b["audio_labels"], layout.first_audio_token_id)
        loss = sums.text_sum / max(sums.text_count, 1) + sums.audio_sums.mean() / max(sums.audio_count, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        tokens += b["num_tokens"] if i else 0
    return tokens / (time.perf_counter() - start), losses
