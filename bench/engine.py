"""Engine benchmark on a random ~34 M-parameter model (Qwen3 backbone, CPU): in one run,
aggregate audio frames/s for 1, 4, 8 and 16 concurrent sessions decoded in one batch
vs the same sessions decoded one after another (the baseline), the share of decode-step
time spent outside the model forward, and the first-audio latency (decode steps and
milliseconds after prefill) of a session with the nano codec's streaming decoder.

Usage: python bench/engine.py [--quick] [--steps 96]
The last line is machine-readable:
RESULT batched8_vs_sequential=<ratio> overhead_share=<fraction> first_audio_steps=<int> first_audio_ms=<float>
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from qinyu.engine import Engine, Request, SamplingParams
from qinyu.layout import TokenLayout, byte_tokenizer, render
from qinyu.model import QinYuForConditionalGeneration, preset_config

PROMPTS = ["hello there", "tell me a story about a dragon", "what time is it?", "sing something",
           "how is the weather today in the mountains?", "good morning", "count to ten", "who are you?"]


def bench_model(layout):
    cfg = preset_config("tiny", layout)
    cfg.backbone.update(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                        num_key_value_heads=4, head_dim=64)
    cfg.description = "benchmark model: random weights"
    torch.manual_seed(0)
    return QinYuForConditionalGeneration(cfg).eval()


def run(model, requests, batched: bool):
    """(frames, seconds, forward seconds, step seconds) for all requests."""
    frames = 0
    forward = steps = 0.0
    start = time.perf_counter()
    groups = [requests] if batched else [[r] for r in requests]
    for group in groups:
        engine = Engine(model, max_batch=len(group))
        for r in group:
            engine.add(r)
        while engine.rows:
            for out in engine.step():
                if out.frames is not None:
                    frames += out.frames.shape[1]
        forward += engine.forward_seconds
        steps += engine.step_seconds
    return frames, time.perf_counter() - start, forward, steps


def speaking_model():
    """A tiny model trained (overfitted) on interleaved spoken replies, so that it speaks
    with the 1/8/4/8 rhythm a trained model has; a random model rarely emits audio."""
    from qinyu.demo import overfit, synthetic_batch

    tok = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    torch.manual_seed(0)
    model = QinYuForConditionalGeneration(preset_config("tiny", layout))
    batch = synthetic_batch(tok, layout, num_samples=4, seed=0)
    overfit(model, batch, steps=300, target=1.0)
    n = int(batch["attention_mask"][0].sum())
    ids = batch["input_ids"][0, :n].tolist()
    header = len(tok.encode("<|im_start|>assistant\n", add_special_tokens=False).ids)
    start = ids.index(layout.im_start, ids.index(layout.user_speaker)) + header
    prompt = Request(ids[:start], [batch["audio_features"][0].numpy()], batch["speaker_embeddings"][0].numpy(),
                     SamplingParams(max_steps=200))
    return model, prompt


def first_audio(model, request, codec, **stream_options):
    """Decode steps and milliseconds from the end of prefill to the first audio chunk."""
    engine = Engine(model, max_batch=1)
    engine.add(request)  # prefill
    stream = codec.stream_decoder(**stream_options)
    start, steps = time.perf_counter(), 0
    while engine.rows:
        for out in engine.step():
            steps += 1
            if out.frames is not None and out.frames.shape[1] and len(stream.push(out.frames)):
                return steps, (time.perf_counter() - start) * 1000
    return -1, float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps (under 2 minutes)")
    ap.add_argument("--steps", type=int, default=96)
    args = ap.parse_args()
    steps = 64 if args.quick else args.steps
    tok = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    model = bench_model(layout)
    print(f"random model: {model.num_parameters() / 1e6:.1f} M parameters, {torch.get_num_threads()} threads, "
          f"{steps} decode steps per session")
    prompts = [render([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], tok, layout,
                      add_generation_prompt=True).input_ids for i in range(16)]
    print(f"{'sessions':>8}{'sequential frames/s':>22}{'batched frames/s':>19}{'ratio':>8}{'outside forward':>17}")
    ratio8 = overhead8 = None
    for n in (1, 4, 8, 16):
        reqs = [Request(p, params=SamplingParams(max_steps=steps)) for p in prompts[:n]]
        f_seq, t_seq, _, _ = run(model, reqs, batched=False)
        f_bat, t_bat, fwd, stp = run(model, reqs, batched=True)
        ratio = (f_bat / t_bat) / max(f_seq / t_seq, 1e-9)
        overhead = 1 - fwd / stp
        print(f"{n:>8}{f_seq / t_seq:>22.1f}{f_bat / t_bat:>19.1f}{ratio:>8.2f}{overhead:>17.1%}")
        if n == 8:
            ratio8, overhead8 = ratio, overhead
    from qinyu.audio.espeak import espeak
    from qinyu.codec import ChunkedStreamDecoder, NanoCodec

    codec = NanoCodec.fit([espeak("one two three four five", voice="en-us")], iterations=2)
    speaker, request = speaking_model()
    fa_steps, fa_ms = first_audio(speaker, request, codec)
    ref_engine = Engine(speaker, max_batch=1)
    ref_engine.add(request)
    ref_stream, ref_steps = ChunkedStreamDecoder(codec), 0  # the reference's 20-frame first chunk
    while ref_engine.rows:
        got = False
        for out in ref_engine.step():
            ref_steps += 1
            if out.frames is not None and out.frames.shape[1] and len(ref_stream.push(out.frames)):
                got = True
        if got:
            break
    print(f"first audio chunk, tiny model trained on 1/8/4/8 replies, nano codec streaming frame by frame: "
          f"{fa_steps} decode steps, {fa_ms:.1f} ms after prefill; with the reference's 20-frame first chunk: "
          f"{ref_steps} steps")
    print(f"RESULT batched8_vs_sequential={ratio8:.2f} overhead_share={overhead8:.3f} "
          f"first_audio_steps={fa_steps} first_audio_ms={fa_ms:.1f}")


if __name__ == "__main__":
    main()
