"""``qinyu demo``: the best end-to-end run available until qinyu-nano ships.

There is no trained speech model in this repository yet, so the demo says so and
shows what the foundation does on its own: it builds a tiny untrained hybrid LM,
renders a handful of spoken conversations (text + user-speech features + speaker
vectors + 8-codebook assistant audio, interleaved 1/8/4/8 with the delay pattern),
trains the model on them until it reproduces every text token and every codebook,
and saves the result.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .layout import AssistantSpeech, UserSpeech, byte_tokenizer, render, with_voice_prompt
from .layout import TokenLayout
from .model import QinYuForConditionalGeneration, collate, preset_config
from .model.metrics import teacher_forced_accuracy

REPLIES = ["Hello there!", "I can sing, too.", "It is sunny today.", "Nice to meet you."]


def synthetic_batch(tokenizer, layout: TokenLayout, num_samples: int = 4, seed: int = 0, feature_size: int = 560):
    """Spoken conversations with random speech features, speaker vectors and codes."""
    rng = np.random.default_rng(seed)
    sequences, features, speakers = [], [], []
    for i in range(num_samples):
        frames = int(rng.integers(3, 7))
        codes = rng.integers(0, 1024, size=(8, int(rng.integers(6, 14))))
        messages = with_voice_prompt([
            {"role": "user", "content": "<|audio|>"},
            {"role": "assistant", "content": REPLIES[i % len(REPLIES)] + "<|audio|>"},
        ])
        sequences.append(render(messages, tokenizer, layout, [UserSpeech(frames), AssistantSpeech(codes)]))
        features.append(torch.from_numpy(rng.standard_normal((frames, feature_size)).astype(np.float32)))
        speakers.append(torch.from_numpy(rng.standard_normal((2, 192)).astype(np.float32) * 14))
    batch = collate(sequences, pad_id=layout.im_end)
    batch["audio_features"] = features
    batch["speaker_embeddings"] = speakers
    return batch


def overfit(model, batch, steps: int = 300, lr: float = 3e-3, target: float = 0.99, progress=None):
    """Train on one batch until every stream's teacher-forced accuracy reaches ``target``."""
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    history = []
    acc = {}
    for step in range(1, steps + 1):
        model.train()
        out = model(**batch)
        optim.zero_grad()
        out.loss.backward()
        optim.step()
        acc = teacher_forced_accuracy(out.logits, batch["labels"], batch["audio_labels"], model.layout)
        history.append((step, out.loss.item(), min(acc.values())))
        if progress:
            progress(step, out, acc)
        if min(acc.values()) >= target:
            break
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    acc = teacher_forced_accuracy(out.logits, batch["labels"], batch["audio_labels"], model.layout)
    return acc, history


def run_demo(out_dir="demo-out", steps: int = 400, seed: int = 0) -> dict:
    from tqdm import tqdm

    print("qinyu demo\n==========")
    print("No trained qinyu model ships yet (qinyu-nano is still to come), so this demo shows the foundation:")
    print("a tiny, randomly initialised hybrid LM learns 4 spoken conversations (text + 8 codebooks,")
    print("1/8/4/8 interleave, delay pattern, user-speech frames and speaker vectors) until it reproduces them.\n")
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tokenizer)
    model = QinYuForConditionalGeneration(preset_config("tiny", layout))
    batch = synthetic_batch(tokenizer, layout, seed=seed)
    print(f"model: {model.num_parameters():,} parameters; batch: {batch['input_ids'].shape[0]} sequences of up to "
          f"{batch['input_ids'].shape[1]} positions, {int((batch['audio_steps'][..., 0] >= 0).sum())} audio steps")
    start = time.time()
    bar = tqdm(total=steps, desc="training", unit="step")

    def progress(step, out, acc):
        bar.update(1)
        bar.set_postfix(loss=f"{out.loss.item():.3f}", worst_acc=f"{min(acc.values()):.3f}")

    acc, history = overfit(model, batch, steps=steps, progress=progress)
    bar.close()
    print(f"\nstopped after {len(history)} steps, {time.time() - start:.1f} s; loss {history[0][1]:.3f} -> "
          f"{history[-1][1]:.3f}")
    print("teacher-forced accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    out_dir = Path(out_dir)
    model.config.description = "demo: tiny LM overfitted on 4 synthetic conversations; not a usable speech model"
    model.save_pretrained(out_dir / "checkpoint", tokenizer=tokenizer)
    with open(out_dir / "training_log.csv", "w") as f:
        f.write("step,loss,worst_stream_accuracy\n")
        f.writelines(f"{s},{l:.6f},{a:.4f}\n" for s, l, a in history)
    print(f"saved checkpoint to {out_dir / 'checkpoint'} (inspect it with `qinyu info {out_dir / 'checkpoint'}`)")
    print(f"training log: {out_dir / 'training_log.csv'}")
    return acc
