"""Nano codec benchmark: fit (or load) a codec, then measure on held-out espeak-ng
sentences and print a table with ratios against two baselines run beside it:

* ``original``: the espeak-ng audio itself (intelligibility of the source);
* ``ceiling``: the same vocoder with unquantised spectral parameters (pitch quantised
  as in the codec), i.e. what the codebooks could at best give.

Metrics (per utterance, then averaged):
* F0 RMSE in cents over frames voiced in both, Praat autocorrelation pitch at 10 ms,
  excluding gross errors (> 20 % off, reported separately as GPE);
* voicing decision error (share of 10 ms frames whose voiced/unvoiced call differs);
* log-spectral distance (dB, RMS over 10 ms frames and 24 mel bands);
* intelligibility: pocketsphinx in forced-choice mode among the 10 candidate
  sentences (English only: pocketsphinx ships an English model);
* real-time factors of encode and decode (2 cores).

XY-Tokenizer streaming (``--xy DIR``: an official folder with xy_tokenizer.ckpt, or a
converted codec folder; default: the tiny random-weight golden model from
../shared/parity, which measures the chunking mechanism, not speech quality): the
reference chunked decode and smaller first chunks, each against the offline decode,
as SNR over the whole output and within 0.1 s of each chunk join, plus the latency of
the first audio.

Usage: python bench/codec.py [--codec DIR] [--fit-minutes 10] [--xy DIR] [--only nano|xy]
                             [--out bench-out/codec]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from qinyu.audio.espeak import espeak
from qinyu.audio.io import resample
from qinyu.codec import NanoCodec, load_codec
from qinyu.codec.fit import fit_nano_codec
from qinyu.codec.nano import NanoSynth, analyse, frame_vectors, pitch_codes, pitch_contour, vectors_to_hops

# Held out: none of these sentences is produced by the training templates.
CANDIDATES = [
    "the quick brown fox jumps over the lazy dog", "i would like a cup of coffee please",
    "the weather is nice today", "we are going to the market tomorrow", "please close the door behind you",
    "my favorite color is green", "the train leaves at seven", "can you sing a song for me",
    "the cat is sleeping on the chair", "she plays the piano every evening",
]
PINYIN_HELD_OUT = ["jin1 tian1 wan3 shang4 wo3 men5 chi1 mian4 tiao2.", "ni3 de5 peng2 you3 shen2 me5 shi2 hou4 lai2?",
                   "zhe4 shou3 ge1 fei1 chang2 hao3 ting1.", "qing3 ba3 chuang1 hu4 da3 kai1."]
EN_VOICES = ["en-us", "en-us+f3", "en+m3", "en-us+f5"]  # en-us+f5 is not a training voice
ZH_VOICES = ["cmn-latn-pinyin", "cmn-latn-pinyin+f2"]


def f0_errors(ref: np.ndarray, test: np.ndarray):
    n = min(len(ref), len(test))
    ref, test = ref[:n], test[:n]
    both = (ref > 0) & (test > 0)
    err = 1200 * np.log2(test[both] / ref[both])
    gross = np.abs(err) > 1200 * np.log2(1.2)
    rmse = float(np.sqrt(np.mean(err[~gross] ** 2))) if (~gross).any() else float("nan")
    return rmse, float(gross.mean()) if both.any() else 0.0, float(np.mean((ref > 0) != (test > 0)))


def lsd(cfg, a: np.ndarray, b: np.ndarray) -> float:
    la, lb = analyse(a.astype(np.float64), cfg).log_bands, analyse(b.astype(np.float64), cfg).log_bands
    n = min(len(la), len(lb))
    return float(np.sqrt(np.mean((10 / np.log(10) * (la[:n] - lb[:n])) ** 2)))


def ceiling(codec: NanoCodec, wav: np.ndarray) -> np.ndarray:
    cfg = codec.config
    feats = analyse(wav.astype(np.float64), cfg)
    bands, voicing = vectors_to_hops(frame_vectors(feats, cfg), cfg)
    synth = NanoSynth(cfg)
    return np.concatenate([synth.push(pitch_contour(pitch_codes(feats.f0, cfg), cfg), voicing, bands),
                           synth.flush()])


class ForcedChoice:
    def __init__(self, candidates, workdir: Path):
        from pocketsphinx import Decoder

        grammar = "#JSGF V1.0;\ngrammar candidates;\npublic <s> = " + " | ".join(candidates) + " ;\n"
        path = workdir / "candidates.gram"
        path.write_text(grammar)
        # batch CMN: each utterance is normalised on its own, so the order of decoding does not matter
        self.decoder = Decoder(samprate=16000, jsgf=str(path), cmn="batch", loglevel="FATAL")

    def __call__(self, wav: np.ndarray) -> str:
        pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


def praat_f0(wav):
    import parselmouth

    p = parselmouth.Sound(np.asarray(wav, dtype=np.float64), sampling_frequency=16000).to_pitch_ac(
        time_step=0.01, pitch_floor=60, pitch_ceiling=800)
    return p.selected_array["frequency"]


def plot(path: Path, example: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    _, _, _, image = axes[0].specgram(example["original"], NFFT=512, Fs=16000, noverlap=352, cmap="magma")
    clim = image.get_clim()
    for ax, key in zip(axes[:2], ("original", "codec")):
        ax.specgram(example[key] + 1e-7, NFFT=512, Fs=16000, noverlap=352, cmap="magma", vmin=clim[0], vmax=clim[1])
        ax.set_ylabel(f"{key}\nHz")
    t = np.arange(len(example["f0_original"])) * 0.01
    for key, style in (("f0_original", "k-"), ("f0_codec", "r--")):
        f = np.where(example[key] > 0, example[key], np.nan)
        axes[2].plot(t[:len(f)], f[:len(t)], style, label=key.split("_")[1])
    axes[2].set_ylabel("F0 Hz")
    axes[2].set_xlabel("seconds")
    axes[2].legend()
    fig.suptitle(f"nano codec: \"{example['text']}\" ({example['voice']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = np.sum((reference - test) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference ** 2) / noise))


def bench_xy(path: str | None) -> None:
    import torch
    from safetensors.torch import load_file

    from qinyu.codec import ChunkedStreamDecoder, XYTokenizer

    if path:
        xy, label = load_codec(path), f"official weights from {path}"
        wav, sr = espeak(" ".join(CANDIDATES[:6]), voice="en-us+f3")
        codes = xy.encode(resample(wav, sr, 16000), 16000)
    else:
        parity = Path(__file__).resolve().parents[2] / "shared" / "parity" / "xy_tokenizer"
        if not parity.is_dir():
            print("XY-Tokenizer: no --xy given and no golden data found; skipped")
            return
        params = json.loads((parity / "config.json").read_text())["tiny_config"]
        xy = XYTokenizer._with_state(params, load_file(str(parity / "weights.safetensors")), "golden", "cpu",
                                     torch.float32)
        codes = load_file(str(parity / "golden.safetensors"))["long_codes"].numpy()
        label = "TINY RANDOM golden weights: measures the chunking, not speech quality"
    offline = xy.decode(codes)
    rate, spf = xy.output_sample_rate, int(xy.samples_per_frame)
    print(f"\nXY-Tokenizer streaming vs offline decode ({label}); {codes.shape[1]} frames, "
          f"{len(offline) / rate:.1f} s")
    print(f"{'first chunk (frames)':<22}{'first audio after':>18}{'SNR all, dB':>13}{'SNR at joins, dB':>18}"
          f"{'vs reference':>14}")
    results = []
    for first in (20, 10, 5):
        stream = ChunkedStreamDecoder(xy, first_chunk=first)
        pieces, starts, emitted = [], [], 0
        for t in range(codes.shape[1]):
            piece = stream.push(codes[:, t:t + 1])
            if len(piece):
                starts.append(emitted)
                pieces.append(piece)
                emitted += len(piece)
        pieces.append(stream.flush())
        out = np.concatenate(pieces)
        # joins: where each decoded chunk's own samples begin (0.2 s cross-fades end there)
        near = np.zeros(len(out), dtype=bool)
        for s in starts[1:]:
            near[max(0, s - rate // 10):s + rate // 10] = True
        results.append((first, snr_db(offline, out), snr_db(offline[near], out[near])))
    ref_join = results[0][2]
    for first, all_snr, join_snr in results:
        latency = first * spf / rate
        print(f"{first:<22}{latency:>17.2f}s{all_snr:>13.1f}{join_snr:>18.1f}{join_snr - ref_join:>+13.1f}dB")


def bench_xy_speed(seconds: float = 10.0) -> None:
    """Real-time factors at the official 32 kHz size (random weights: speed only)."""
    import torch

    from qinyu.codec import ChunkedStreamDecoder, XYTokenizer, official_params

    torch.manual_seed(0)
    start = time.perf_counter()
    xy = XYTokenizer(official_params("32k"))
    print(f"\nXY-Tokenizer speed at the official size (519.9 M parameters, random weights, fp32, "
          f"{torch.get_num_threads()} threads; built in {time.perf_counter() - start:.1f} s)")
    wav = np.random.default_rng(0).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
    start = time.perf_counter()
    codes = xy.encode(wav, 16000)
    encode = time.perf_counter() - start
    start = time.perf_counter()
    xy.decode(codes)
    decode = time.perf_counter() - start
    print(f"{'what':<44}{'seconds':>10}{'x real time':>13}{'vs offline decode':>19}")
    print(f"{f'encode {seconds:.0f} s (one 30 s window)':<44}{encode:>10.2f}{seconds / encode:>13.2f}")
    print(f"{f'decode {seconds:.0f} s offline':<44}{decode:>10.2f}{seconds / decode:>13.2f}{1.0:>19.2f}")
    for first in (20, 10, 5):
        stream = ChunkedStreamDecoder(xy, first_chunk=first)
        start = time.perf_counter()
        for t in range(codes.shape[1]):
            stream.push(codes[:, t:t + 1])
        stream.flush()
        took = time.perf_counter() - start
        label = f"decode {seconds:.0f} s streaming, first chunk {first}"
        print(f"{label:<44}{took:>10.2f}{seconds / took:>13.2f}{decode / took:>19.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", help="a fitted nano codec folder (default: fit one now)")
    ap.add_argument("--fit-minutes", type=float, default=10.0)
    ap.add_argument("--xy", help="XY-Tokenizer: official folder (xy_tokenizer.ckpt + YAML) or codec folder")
    ap.add_argument("--only", choices=["nano", "xy"], help="run one part only")
    ap.add_argument("--out", default="bench-out/codec")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only != "xy":
        bench_nano(args, out)
    if args.only != "nano":
        bench_xy(args.xy)
        bench_xy_speed()


def bench_nano(args, out: Path) -> None:

    if args.codec:
        codec = load_codec(args.codec)
        print(f"codec: {args.codec} ({codec.info})")
    else:
        start = time.time()
        codec = fit_nano_codec(out / "nano_codec", minutes=args.fit_minutes)
        print(f"fitted on {codec.info['fitted_on_seconds']} s of speech in {time.time() - start:.1f} s "
              f"(target: <= 300 s for 10 minutes)")
    cfg = codec.config

    warm, warm_sr = espeak("warm up", voice="en-us")
    codec.decode(codec.encode(warm, warm_sr))  # first calls pay one-off set-up costs; keep them out of the timing
    chooser = ForcedChoice(CANDIDATES, out)
    rows, enc_time, dec_time, audio_seconds, example = [], 0.0, 0.0, 0.0, None
    items = [(t, v, "en") for t in CANDIDATES for v in EN_VOICES] + [(t, v, "zh") for t in PINYIN_HELD_OUT
                                                                      for v in ZH_VOICES]
    for i, (text, voice, lang) in enumerate(items):
        wav, sr = espeak(text, voice=voice, pitch=50)
        wav = resample(wav, sr, 16000)
        t0 = time.perf_counter()
        codes = codec.encode(wav, 16000)
        t1 = time.perf_counter()
        decoded = codec.decode(codes)[:len(wav)]
        t2 = time.perf_counter()
        enc_time, dec_time, audio_seconds = enc_time + t1 - t0, dec_time + t2 - t1, audio_seconds + len(wav) / 16000
        ceil = ceiling(codec, np.pad(wav, (0, codes.shape[1] * 1280 - len(wav))))[:len(wav)]
        f0_ref = praat_f0(wav)
        row = {"lang": lang}
        for name, y in (("original", wav), ("ceiling", ceil), ("codec", decoded)):
            f0 = praat_f0(y)
            row[name] = dict(zip(("f0_rmse", "gpe", "voicing_error"), f0_errors(f0_ref, f0)))
            row[name]["lsd"] = lsd(cfg, wav, y)
            if lang == "en":
                row[name]["correct"] = float(chooser(y) == text)
        rows.append(row)
        if example is None:
            example = {"text": text, "voice": voice, "original": wav, "codec": decoded, "f0_original": f0_ref,
                       "f0_codec": praat_f0(decoded)}
        print(f"\r{i + 1}/{len(items)} utterances measured", end="", flush=True)
    print()

    def mean(system, key, lang=None):
        vals = [r[system][key] for r in rows if key in r[system] and (lang is None or r["lang"] == lang)]
        return float(np.nanmean(vals)) if vals else float("nan")

    metrics = [("F0 RMSE, cents (fine errors)", "f0_rmse", "<= 50"), ("gross pitch errors (>20 %)", "gpe", ""),
               ("voicing decision error", "voicing_error", "<= 0.10"), ("log-spectral distance, dB", "lsd", ""),
               ("forced choice among 10, EN", "correct", "= original")]
    print(f"\nheld out: {len(rows)} utterances ({sum(r['lang'] == 'en' for r in rows)} English, "
          f"{sum(r['lang'] == 'zh' for r in rows)} Mandarin pinyin), {audio_seconds:.1f} s")
    print(f"{'metric':<32}{'codec':>10}{'ceiling':>10}{'original':>10}{'codec/ceiling':>15}{'codec/orig':>12}"
          f"  target")
    summary = {}
    for label, key, target in metrics:
        c, k, o = mean("codec", key), mean("ceiling", key), mean("original", key)
        summary[key] = {"codec": c, "ceiling": k, "original": o}
        ratio_k = f"{c / k:.2f}" if k else "-"
        ratio_o = f"{c / o:.2f}" if o else "-"
        print(f"{label:<32}{c:>10.3f}{k:>10.3f}{o:>10.3f}{ratio_k:>15}{ratio_o:>12}  {target}")
    enc_rtf, dec_rtf = audio_seconds / enc_time, audio_seconds / dec_time
    print(f"{'encode speed, x real time':<32}{enc_rtf:>10.0f}{'':>37}  >= 50")
    print(f"{'decode speed, x real time':<32}{dec_rtf:>10.0f}{'':>37}  >= 50")
    summary.update({"encode_rtf": enc_rtf, "decode_rtf": dec_rtf, "utterances": len(rows),
                    "codec_info": codec.info})
    (out / "nano_results.json").write_text(json.dumps(summary, indent=2))
    print(f"results: {out / 'nano_results.json'}")
    plot(out / "example.png", example)


if __name__ == "__main__":
    main()
