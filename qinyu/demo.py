"""``qinyu demo`` and small helpers shared by tests and benchmarks.

``run_demo`` (``make demo``): the shipped qinyu-nano (``checkpoints/qinyu-nano``, made by
``make speedrun``) answers the spoken questions bundled with it (``examples/*.wav``,
spoken by a voice it never heard), writes its spoken replies, then the voice server
serves it (web page, realtime WebSocket) until Ctrl-C. Offline: everything is in the
checkpoint folder.
``run_toy_demo`` (``qinyu demo --toy``): the whole recipe at toy scale in a few minutes
(synthesise, fit the codec, prepare, train a tiny LM through stages 0, 1 and 2, talk).
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


NANO_CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "qinyu-nano"


def run_demo(out_dir="demo-out", model_dir=None, serve: bool = True, host: str = "127.0.0.1",
             port: int = 8000, max_steps: int = 1000) -> dict:
    """Answer the checkpoint's bundled spoken questions (reply wavs to ``out_dir``), then
    serve it. Returns {question: reply text}."""
    from .audio.io import load_audio, save_audio
    from .engine import SamplingParams
    from .engine.session import AudioChunk, Done, load_session

    model_dir = Path(model_dir) if model_dir else NANO_CHECKPOINT
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir / 'config.json'} is missing: the shipped qinyu-nano checkpoint is not "
                                f"there (`make speedrun` trains one into runs/nano/checkpoint; `qinyu demo --model "
                                f"DIR` uses it)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"qinyu demo: {model_dir}")
    report = model_dir / "report.md"
    if report.is_file():
        print(f"(held-out evaluation of this checkpoint: {report})")
    session = load_session(model_dir, params=SamplingParams(max_steps=max_steps))
    results = {}
    for wav_path in sorted((model_dir / "examples").glob("*.wav")):
        question = wav_path.with_suffix(".txt").read_text().strip() if wav_path.with_suffix(".txt").is_file() else "?"
        wav = load_audio(wav_path, 16000)[0]
        heard = session.asr(wav, 16000)
        pcm, done = [], None
        for event in session.respond(session.user_turn(audio=(wav, 16000)), remember=False):
            if isinstance(event, AudioChunk):
                pcm.append(event.pcm)
            elif isinstance(event, Done):
                done = event
        if session.codec is not None:
            reply, rate = out / f"reply-{wav_path.stem}.wav", session.codec.output_sample_rate
            audio = np.concatenate(pcm) if pcm else np.zeros(1, np.float32)
            save_audio(reply, audio, rate)
            spoken = f"{len(audio) / rate:.1f} s of speech -> {reply}"
        else:
            spoken = "this checkpoint names no codec: text only"
        print(f"  user (spoken, {wav_path.name}): {question!r}\n    heard (its ASR): {heard!r}\n"
              f"    qinyu: {done.text.strip()!r}  [{spoken}]")
        results[question] = done.text.strip()
    if serve:
        from .server.app import run_server
        from .server.config import ServerConfig

        print("\nstarting the voice server: open its URL in a browser, allow the microphone and ask e.g. "
              "\"what is two plus five?\"; Ctrl-C stops", flush=True)
        run_server(model_dir, ServerConfig.from_dict({"host": host, "port": port}))
    return results


def run_toy_demo(out_dir="demo-out", seed: int = 0) -> dict:
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
    print("qinyu toy demo\n==============")
    print(f"The whole recipe at toy scale: {len(QA)} spoken question/answer pairs are synthesised with espeak-ng, the nano codec is")
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
