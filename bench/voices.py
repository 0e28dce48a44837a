"""Voice benchmark for qinyu-nano checkpoints: how often the speech a checkpoint makes is
nearest the voice it was given, the first checkpoint named being the baseline.

Each checkpoint reads held-out role-play lines as TTS prompts (``Convert the text to
speech.``, as the ``voice_tts`` samples the stages train on), each line once in every one of
the eight role-play voices, conditioned on the voice vector training used for that voice
(``prepared/voices/<voice>.npy`` of the speedrun), greedy decoding. The judge is the first
checkpoint's CAM++ speaker encoder: nearest of the eight voices, each a mean embedding of
its reference clips passed through the checkpoint's codec, as ``qinyu eval nano`` judges
role-play lines. Lines x 8 voices tell the voice apart from the line, which the 48 held-out
role-play items of the evaluation (one voice per line, a text-to-timbre vector) do not.

Usage: python bench/voices.py RUN_DIR [RUN_DIR ...] [--lines 12]
  (RUN_DIR: a speedrun folder with checkpoint/, corpus/ and prepared/voices/)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from qinyu.engine.session import Persona
from qinyu.layout import TTS_PROMPT
from qinyu.layout.chat import VOICE_LINE
from qinyu.nano.corpus import ROLEPLAY_VOICES
from qinyu.nano.evaluate import NanoModel, load_heldout, voice_rows, voice_targets


def speak(nm: NanoModel, lines: list[str], voices: dict) -> list[tuple[str, tuple]]:
    """(voice, (wav, sr)) for every line in every voice, generated in batches of 8."""
    requests, labels = [], []
    for voice, vector in voices.items():
        for line in lines:
            session = nm.speech.session(Persona(system=VOICE_LINE, voice=vector))
            request = session.request(session.user_turn(text=TTS_PROMPT.format(text=line)))
            requests.append(replace(request, params=replace(request.params, max_steps=12 * len(line) // 5 + 64)))
            labels.append(voice)
    out = []
    for start in range(0, len(requests), 8):
        for voice, reply in zip(labels[start:start + 8], nm.speech.generate(requests[start:start + 8])):
            out.append((voice, None if isinstance(reply, Exception) else (reply.audio, reply.sample_rate)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="speedrun folders; the first is the baseline")
    ap.add_argument("--lines", type=int, default=12, help="held-out role-play lines, each read in all 8 voices")
    args = ap.parse_args()
    judge = NanoModel(args.runs[0] / "checkpoint", args.runs[0] / "corpus")
    targets = voice_targets(judge, judge.corpus)
    items = [it for it in load_heldout(args.runs[0] / "corpus") if it.kind == "roleplay"][:args.lines]
    lines = [it.sample["messages"][-1]["content"].replace("<|audio|>", "").strip() for it in items]
    print(f"{len(lines)} held-out role-play lines x {len(targets)} voices; judge: CAM++ of {args.runs[0]}")
    results = []
    for run in args.runs:
        nm = NanoModel(run / "checkpoint", run / "corpus")
        voices = {v: np.load(run / "prepared" / "voices" / f"{v}.npy").astype(np.float32) for v in ROLEPLAY_VOICES}
        started = time.time()
        spoken = speak(nm, lines, voices)
        cases = [(f"{voice}-{k}", audio, voice) for k, (voice, audio) in enumerate(spoken)]
        judged = {}  # id -> similarity to the given voice, nearest voice; silent replies are left out
        voice_rows(cases, judge.embed, targets, "", details=judged)
        hits, sims, confusion = 0, [], {v: {} for v in voices}
        for item_id, _, voice in cases:
            if item_id in judged:
                nearest = judged[item_id]["nearest"]
                hits += nearest == voice
                sims.append(judged[item_id]["similarity"])
                confusion[voice][nearest] = confusion[voice].get(nearest, 0) + 1
        acc = 100.0 * hits / len(spoken)
        results.append((run, acc, float(np.mean(sims)) if sims else float("nan")))
        print(f"{run}: nearest voice {acc:.1f} % of {len(spoken)} ({len(spoken) - len(sims)} silent), mean cosine "
              f"to the given voice {results[-1][2]:.3f}, {time.time() - started:.0f} s")
        for voice, row in confusion.items():
            print(f"    {voice:>10} -> " + ", ".join(f"{v} {n}" for v, n in sorted(row.items(), key=lambda x: -x[1])))
    base = results[0]
    for run, acc, sim in results[1:]:
        print(f"{run} against {base[0]}: nearest voice {acc / base[1]:.2f}x ({acc:.1f} vs {base[1]:.1f} %), "
              f"cosine {sim / base[2]:.2f}x ({sim:.3f} vs {base[2]:.3f})")


if __name__ == "__main__":
    main()
