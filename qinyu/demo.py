"""``qinyu demo``: the best end-to-end run available until qinyu-nano ships, and small
helpers shared by tests and benchmarks.

There is no trained speech model in this repository yet, so the demo says so and runs
the whole recipe at toy scale (``run_demo``): synthesise spoken dialogues with
espeak-ng, fit the nano codec, prepare the data, train the tiny hybrid LM through
stages 0, 1 and 2, then talk to it with recordings in a voice it never heard.
``synthetic_batch``/``overfit`` build and memorise rendered conversations;
``speaking_checkpoint`` writes an untrained model that can already speak.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .layout import AssistantSpeech, UserSpeech, render, with_voice_prompt
from .layout import TokenLayout
from .model import collate
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


def speaking_checkpoint(out, preset: str = "tiny", seed: int = 0) -> Path:
    """A randomly initialised (UNTRAINED) checkpoint that can speak: the preset's model plus a
    nano codec fitted for two iterations on one espeak-ng utterance and named in its config.
    Its replies are noise-like but real audio, which is what the engine, server, web page and
    evaluation harness need to be wired and tested end to end."""
    import json

    from .audio.espeak import espeak
    from .codec import NanoCodec
    from .model import new_checkpoint

    ck = new_checkpoint(out, preset=preset, seed=seed)
    NanoCodec.fit([espeak("one two three four", voice="en-us")], iterations=2).save(ck / "codec")
    config = json.loads((ck / "config.json").read_text())
    config["codec"] = {"type": "nano", "path": "codec"}
    (ck / "config.json").write_text(json.dumps(config, indent=2))
    return ck


def run_demo(out_dir="demo-out", seed: int = 0) -> dict:
    """The whole path on a toy corpus, from nothing: synthesise spoken dialogues with
    espeak-ng, fit the nano codec, prepare the data, train the tiny hybrid LM through
    stages 0, 1 and 2, then talk to it with recordings in a voice it never heard."""
    import json
    import shutil

    from .audio.espeak import espeak
    from .audio.io import resample, save_audio
    from .codec.fit import fit_nano_codec
    from .data.prepare import prepare
    from .data.toy import QA, write_toy_corpus
    from .engine import SamplingParams
    from .engine.session import AudioChunk, Done, load_session
    from .train.recipe import Recipe
    from .train.trainer import train

    out = Path(out_dir).resolve()
    recipes = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
    print("qinyu demo\n==========")
    print("qinyu-nano (the trained laptop-scale model) is not built yet. This demo runs the whole recipe at toy")
    print(f"scale instead: {len(QA)} spoken question/answer pairs are synthesised with espeak-ng, the nano codec is")
    print("fitted, the data prepared, and a 1.4 M-parameter hybrid LM trained from scratch through stages 0, 1 and 2;")
    print("then it answers recordings in a voice it never heard. It memorises its corpus; it is not a general model.\n")
    start = time.time()
    corpus = write_toy_corpus(out / "corpus", seed=seed)
    codec_dir = out / "codec"
    if not (codec_dir / "codec.json").is_file():
        fit_nano_codec(codec_dir, minutes=2, iterations=8, seed=seed)
    report = prepare({"inputs": [str(corpus)], "output": str(out / "prepared"), "codec": str(codec_dir),
                      "workers": 2})
    print(report.summary())
    init = "preset:tiny"
    for stage in ("stage0", "stage1", "stage2"):
        recipe = Recipe.load(recipes / f"{stage}.yaml")
        recipe.out = str(out / stage)
        recipe.init = init
        recipe.data[0].path = str(out / "prepared" / "train.prepared.jsonl")
        last = train(recipe)
        print(f"  {recipe.name}: final loss {last['loss']:.4f} (text {last['text_loss']:.4f}, "
              f"audio {last['audio_loss']:.4f})")
        init = str(out / stage / "final")
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(init, model_dir)
    shutil.copytree(codec_dir, model_dir / "codec")
    config = json.loads((model_dir / "config.json").read_text())
    config.update(codec={"type": "nano", "path": "codec"}, trained=True,
                  description="qinyu demo: tiny LM trained on a 12-pair toy corpus (memorises it)")
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    print(f"\ntrained in {time.time() - start:.0f} s; model with its codec: {model_dir}\n")

    session = load_session(model_dir, params=SamplingParams(max_steps=300))
    session.persona.system = ""  # the toy corpus has no system prompt
    results = {}
    for i, (question, answer) in enumerate(QA[:4]):
        wav, sr = espeak(question, voice="en-us+f5", pitch=60)  # a voice not in the corpus
        save_audio(out / f"question-{i}.wav", wav, sr)
        pcm, done = [], None
        for event in session.respond(session.user_turn(audio=(resample(wav, sr, 16000), 16000)), remember=False):
            if isinstance(event, AudioChunk):
                pcm.append(event.pcm)
            elif isinstance(event, Done):
                done = event
        reply = out / f"reply-{i}.wav"
        save_audio(reply, np.concatenate(pcm) if pcm else np.zeros(1, np.float32), session.codec.output_sample_rate)
        ok = "✓" if done.text.strip() == answer else "✗"
        print(f"  user (spoken): {question!r}\n  qinyu: {done.text!r} {ok}  [{done.codes.shape[1]} frames of speech "
              f"-> {reply.name}]")
        results[question] = done.text
    wav, sr = espeak(QA[5][0], voice="en-us+f5")
    text = session.asr(resample(wav, sr, 16000), 16000)
    print(f"  ASR of {QA[5][0]!r} (same unseen voice): {text!r}")
    results["asr"] = text
    print(f"\noutputs in {out}: question-*.wav, reply-*.wav, stage*/loss.png, stage*/metrics.csv")
    return results
