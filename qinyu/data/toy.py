"""A toy spoken-dialogue corpus, synthesised offline with espeak-ng: spoken questions
(several user voices) and spoken answers (one assistant voice), plus ASR and TTS
samples. For wiring and smoke-testing the pipeline; qinyu-nano's corpus is bigger."""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..audio.espeak import espeak
from ..audio.io import save_audio

QA = [
    ("What is your name?", "My name is Qinyu."),
    ("How are you today?", "I am fine, thank you."),
    ("What time is it?", "It is seven o'clock."),
    ("Can you sing for me?", "Sure, la la la."),
    ("Where do you live?", "I live in the computer."),
    ("What color is the sky?", "The sky is blue."),
    ("Do you like music?", "Yes, I love music."),
    ("Is it raining?", "No, it is sunny."),
    ("What should I eat?", "Try some noodles."),
    ("Tell me a number.", "Forty two."),
    ("Good morning!", "Good morning to you."),
    ("Thank you very much.", "You are welcome."),
]
USER_VOICES = ["en-us", "en-us+f3", "en+m3", "en-us+f4"]
ASSISTANT_VOICE = "en-us+f2"


def write_toy_corpus(out, num_samples: int = 48, seed: int = 0) -> Path:
    out = Path(out)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []

    def say(name, text, voice, pitch):
        path = out / "wavs" / f"{name}.wav"
        if not path.is_file():
            wav, sr = espeak(text, voice=voice, pitch=pitch)
            save_audio(path, wav, sr)
        return f"wavs/{name}.wav"

    for i in range(num_samples):
        q, a = QA[i % len(QA)]
        voice = rng.choice(USER_VOICES)
        user = say(f"q{i:03d}", q, voice, rng.randint(35, 65))
        reply = say(f"a{i % len(QA):03d}", a, ASSISTANT_VOICE, 50)
        task = ("chat", "asr", "tts", "chat")[(i // len(QA)) % 4]  # every pair appears in every task
        if task == "chat":
            messages = [{"role": "user", "content": "<|audio|>"}, {"role": "assistant", "content": a + "<|audio|>"}]
            audios = [user, reply]
        elif task == "asr":
            messages = [{"role": "user", "content": "Convert the speech to text.\n<|audio|>"},
                        {"role": "assistant", "content": q}]
            audios = [user]
        else:
            messages = [{"role": "user", "content": f"Convert the text to speech.\n{a}"},
                        {"role": "assistant", "content": a + "<|audio|>"}]
            audios = [reply]
        lines.append({"id": f"toy-{i:03d}", "task": task, "messages": messages, "audios": audios})
    path = out / "train.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path
