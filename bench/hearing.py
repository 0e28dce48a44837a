"""Hearing benchmark for qinyu-nano checkpoints: the SLM's transcripts of the held-out ASR
utterances against greedy CTC decoding of the very frames it reads (the baseline), split
by whether the utterance says a train phrasing or an unheard one.

Both read the same 104 held-out utterances (four unheard user voices): the SLM through its
ASR prompt (``Convert the speech to text.``, greedy, as ``qinyu eval nano``), the baseline
through the encoder's own CTC head (``ctc.ctc_lo``, which the nano encoder keeps) with
repeats collapsed and blanks dropped. CER over letters, digits, spaces and apostrophes,
lowercased, summed over a group. A group's ratio SLM / CTC above 1 is what the LM loses in
reading the frames; the CTC column is what the encoder hears.

Usage: python bench/hearing.py RUN_DIR [RUN_DIR ...] [--limit N] [--show K]
  (RUN_DIR: a speedrun folder with checkpoint/ and corpus/)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from qinyu.audio.io import load_audio
from qinyu.eval.metrics.wer import align_counts
from qinyu.nano.evaluate import NanoModel, load_heldout
from qinyu.train.encoder_ctc import greedy_ctc, letters


def ctc_transcripts(nm: NanoModel, audios: list[tuple]) -> list[str]:
    """Greedy CTC of the checkpoint's encoder on each (wav, sr), through the SLM's own front end."""
    model = nm.speech.model
    encoder = model.audio_encoder
    head = getattr(getattr(encoder, "ctc", None), "ctc_lo", None)
    if head is None:
        raise SystemExit(f"{nm.model_dir}: the audio encoder has no CTC head (ctc.ctc_lo) to decode with")
    front_end = nm.speech.base.front_end
    blank = head.out_features - 1
    out = []
    with torch.no_grad():
        for wav, sr in audios:
            x = torch.as_tensor(np.asarray(front_end(wav, sr), np.float32))[None]
            frames, _ = encoder(x.to(model.device, model.dtype), torch.tensor([x.shape[1]], device=model.device))
            out.append(nm.speech.tokenizer.decode(greedy_ctc(head(frames[0]).float(), blank)))
    return out


def run(run_dir: Path, limit: int | None, show: int) -> dict:
    corpus = run_dir / "corpus"
    nm = NanoModel(run_dir / "checkpoint", corpus, device="cpu")
    items = [it for it in load_heldout(corpus) if it.kind == "asr"][:limit]
    audios = [load_audio(corpus / it.reference["audio"], 16000) for it in items]
    started = time.time()
    ctc = ctc_transcripts(nm, audios)
    ctc_s = time.time() - started
    started = time.time()
    slm = nm.transcribe(audios)
    slm_s = time.time() - started
    groups: dict[str, list[int]] = {}
    shown = 0
    for it, c, s in zip(items, ctc, slm):
        ref = letters(it.reference["text"])
        s = letters(s) if isinstance(s, str) else ""
        group = "unheard phrasing" if any("phrasing" in t for t in it.meta["tests"]) else "train phrasing"
        g = groups.setdefault(group, [0, 0, 0, 0])
        g[0] += sum(align_counts(list(ref), list(letters(c))))
        g[1] += sum(align_counts(list(ref), list(s)))
        g[2] += len(ref)
        g[3] += 1
        if group == "unheard phrasing" and shown < show:
            print(f"  {ref[:44]:44s} | CTC {letters(c)[:38]:38s} | SLM {s[:38]}")
            shown += 1
    print(f"{run_dir}: {len(items)} held-out ASR utterances (greedy CTC {ctc_s:.1f} s, SLM {slm_s:.1f} s)")
    print(f"  {'group':18s} {'n':>4s} {'CTC CER':>8s} {'SLM CER':>8s} {'SLM / CTC':>9s}")
    groups["all"] = [sum(g[k] for g in groups.values()) for k in range(4)]
    for name, (ctc_errors, slm_errors, chars, n) in groups.items():
        c, s = ctc_errors / max(1, chars), slm_errors / max(1, chars)
        print(f"  {name:18s} {n:4d} {100 * c:7.1f}% {100 * s:7.1f}% {s / c if c else float('inf'):8.2f}x")
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--limit", type=int, default=None, help="the first N held-out ASR utterances")
    parser.add_argument("--show", type=int, default=6, help="print K unheard-phrasing utterances side by side")
    args = parser.parse_args()
    for run_dir in args.runs:
        if not (run_dir / "checkpoint" / "config.json").is_file() or not (run_dir / "corpus").is_dir():
            raise SystemExit(f"{run_dir}: not a speedrun folder (needs checkpoint/ and corpus/)")
        run(run_dir, args.limit, args.show)


if __name__ == "__main__":
    main()
