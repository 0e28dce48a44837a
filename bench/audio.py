"""Audio front end + SenseVoice encoder throughput: 10 s of audio through the Kaldi
fbank/LFR/CMVN front end and the encoder, at the tiny and the official size (random
weights: speed only), as real-time factors. The front end alone is the baseline run
beside it.

Usage: python bench/audio.py [--seconds 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from qinyu.audio.fbank import SenseVoiceFrontEnd
from qinyu.audio.sensevoice import SenseVoiceSmall


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    wav = (np.random.default_rng(0).standard_normal(int(16000 * args.seconds)) * 0.1).astype(np.float32)
    front = SenseVoiceFrontEnd()
    feats = torch.from_numpy(front(wav))[None]
    lengths = torch.tensor([feats.shape[1]])
    fe_time = best_of(args.repeats, lambda: front(wav))
    print(f"{args.seconds:.0f} s of 16 kHz audio -> {feats.shape[1]} LFR frames; {torch.get_num_threads()} threads; "
          f"best of {args.repeats}")
    print(f"{'what':<62}{'seconds':>9}{'x real time':>13}{'vs front end':>14}")
    print(f"{'front end (fbank + LFR + CMVN)':<62}{fe_time:>9.3f}{args.seconds / fe_time:>13.0f}{1.0:>14.2f}")
    sizes = {"tiny (d 64, 3 + 2 blocks)": dict(output_size=64, linear_units=128, num_blocks=3, tp_blocks=2,
                                               vocab_size=40),
             "official (234 M, d 512, 50 + 20 blocks)": {}}
    for name, kwargs in sizes.items():
        torch.manual_seed(0)
        model = SenseVoiceSmall(**kwargs).eval()
        for dtype in (torch.float32, torch.bfloat16):
            model.to(dtype)
            with torch.no_grad():
                took = best_of(args.repeats, lambda: model(feats.to(dtype), lengths)) + fe_time
            label = f"front end + encoder, {name}, {str(dtype)[6:]}"
            print(f"{label:<62}{took:>9.3f}{args.seconds / took:>13.1f}{fe_time / took:>14.3f}")


if __name__ == "__main__":
    main()
