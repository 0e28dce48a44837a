"""Realtime server benchmark under load: the real ``qinyu serve`` process (uvicorn) on
a loopback port with the tiny random model and a quickly fitted nano codec, driven by
C concurrent WebSocket clients that each speak espeak-ng utterances in real time
(20 ms PCM16 chunks) and wait for the spoken reply.

Phases:
1. calibration: each of the 8 utterances once, alone. Its reply text (greedy decoding,
   deterministic VAD on an identical stream) is the reference for that utterance, and
   these runs give the baseline latency (end of speech -> first audio delta).
2. load: C clients loop for D seconds; client i runs sessions with utterance
   (i + k) % 8. Per session: completed or error, latency, reply text.
3. cross-talk check: a session received another session's text if its reply differs
   from its utterance's calibrated reply and equals another utterance's, or if it saw
   a response/item/session id that another session saw. Replies that differ from the
   calibration and match no other utterance are "mismatches" (nondeterminism, not
   cross-talk) and are listed.

Usage: python bench/server.py [--quick] [--clients 32] [--seconds 60] [--max-steps 64]
The last line is machine-readable:
RESULT sessions=<n> errors=<n> p50_ms=<ms> p95_ms=<ms> baseline_p50_ms=<ms> crosstalk=<n> mismatches=<n>
Exit status 1 when crosstalk > 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
CHUNK = 320  # 20 ms at 16 kHz
CHUNK_S = CHUNK / SAMPLE_RATE
LEAD_SILENCE_S = 0.3
GIVE_UP_S = 30.0  # after the end of the utterance, without response.done -> error
VOICED_LEVEL = 100  # |PCM16| above this (about -50 dBFS) counts as speech for "end of speech"

# distinct texts and voices; no commas (an espeak pause could split the turn at the VAD)
UTTERANCES = [
    ("what is two plus five", "en-us"),
    ("tell me a story about a dragon", "en+m3"),
    ("good morning how are you today", "en+f2"),
    ("please sing me a little song", "en-gb"),
    ("what time is it in tokyo right now", "en+f4"),
    ("who won the football match yesterday", "en+m7"),
    ("can you count from one to ten", "en-us+f3"),
    ("how is the weather in the mountains", "en+m5"),
]


# -- setup --------------------------------------------------------------------------------
def build_checkpoint(root: Path) -> Path:
    """The tiny random model with a nano codec fitted 2 iterations (qinyu.demo.speaking_checkpoint)."""
    from qinyu.demo import speaking_checkpoint

    return speaking_checkpoint(root / "tiny")


@dataclass
class Utterance:
    index: int
    text: str
    voice: str
    seconds: float
    chunks: list[str]  # ready-made input_audio_buffer.append events
    last_voiced: int  # index of the last chunk with speech in it


def make_utterances() -> list[Utterance]:
    from qinyu.audio.espeak import espeak
    from qinyu.audio.io import resample

    out = []
    for i, (text, voice) in enumerate(UTTERANCES):
        wav, sr = espeak(text, voice=voice)
        speech = resample(wav, sr, SAMPLE_RATE)
        pcm = np.concatenate([np.zeros(int(LEAD_SILENCE_S * SAMPLE_RATE), np.float32), speech])
        pcm = np.concatenate([pcm, np.zeros(-len(pcm) % CHUNK, np.float32)])
        pcm16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
        blocks = pcm16.reshape(-1, CHUNK)
        voiced = np.flatnonzero(np.abs(blocks.astype(np.int32)).max(axis=1) > VOICED_LEVEL)
        chunks = [json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b.tobytes()).decode()})
                  for b in blocks]
        out.append(Utterance(i, text, voice, len(pcm) / SAMPLE_RATE, chunks, int(voiced[-1])))
    return out


SILENCE = json.dumps({"type": "input_audio_buffer.append",
                      "audio": base64.b64encode(np.zeros(CHUNK, "<i2").tobytes()).decode()})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_health(port: int, timeout: float = 2.0) -> dict | None:
    try:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout).read())
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


# -- one session --------------------------------------------------------------------------
@dataclass
class Result:
    serial: int
    utterance: int
    ok: bool = False
    error: str | None = None
    latency_ms: float | None = None  # end of speech -> first response.audio.delta
    stopped_ms: float | None = None  # end of speech -> input_audio_buffer.speech_stopped
    created_ms: float | None = None  # end of speech -> response.created
    text: str = ""
    status: str | None = None
    decode_steps: int = 0
    audio_ms: float = 0.0
    ids: set = field(default_factory=set)
    started: float = 0.0
    ended: float = 0.0


_serials = iter(range(1, 1 << 62))


async def run_session(port: int, utt: Utterance, steps: int) -> Result:
    from websockets.asyncio.client import connect

    loop = asyncio.get_running_loop()
    res = Result(next(_serials), utt.index, started=loop.time())
    t_eos = t_first_audio = t_stopped = t_created = None
    done = asyncio.Event()
    deltas: list[str] = []
    try:
        async with connect(f"ws://127.0.0.1:{port}/v1/realtime", max_size=None, ping_interval=None,
                           open_timeout=30, close_timeout=5) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if first.get("type") != "session.created":
                res.error = f"first event {first.get('type')}: {first.get('error', {}).get('code')}"
                return res
            res.ids.add(first["session"]["id"])
            await ws.send(json.dumps({"type": "session.update", "session": {"max_response_steps": steps}}))

            async def receive():
                nonlocal t_first_audio, t_stopped, t_created
                async for message in ws:
                    ev = json.loads(message)
                    kind = ev.get("type")
                    for key in ("response_id", "item_id", "previous_item_id"):
                        if isinstance(ev.get(key), str):
                            res.ids.add(ev[key])
                    for key in ("response", "item", "session"):
                        if isinstance(ev.get(key), dict) and isinstance(ev[key].get("id"), str):
                            res.ids.add(ev[key]["id"])
                    if kind == "error":
                        err = ev.get("error") or {}
                        res.error = f"error event {err.get('code')}: {str(err.get('message'))[:120]}"
                        done.set()
                        return
                    if kind == "response.audio_transcript.delta":
                        deltas.append(ev["delta"])
                    elif kind == "response.audio.delta" and t_first_audio is None:
                        t_first_audio = loop.time()
                    elif kind == "input_audio_buffer.speech_stopped" and t_stopped is None:
                        t_stopped = loop.time()
                    elif kind == "response.created" and t_created is None:
                        t_created = loop.time()
                    elif kind == "response.done":
                        r = ev["response"]
                        res.status = r.get("status")
                        usage = r.get("usage") or {}
                        res.decode_steps = usage.get("decode_steps") or 0
                        res.audio_ms = usage.get("audio_ms") or 0.0
                        for out in r.get("output") or []:
                            if isinstance(out.get("id"), str):
                                res.ids.add(out["id"])
                        if res.status not in ("completed", "incomplete"):
                            res.error = f"response.done status {res.status}: {r.get('status_details')}"
                        done.set()
                        return
                if not done.is_set():
                    res.error = "connection closed before response.done"
                    done.set()

            receiver = asyncio.create_task(receive())
            try:
                start = loop.time()
                k = 0
                while not done.is_set():
                    delay = start + k * CHUNK_S - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if done.is_set():
                        break
                    await ws.send(utt.chunks[k] if k < len(utt.chunks) else SILENCE)
                    if k == utt.last_voiced:
                        t_eos = loop.time()
                    if k >= len(utt.chunks) and loop.time() - start > utt.seconds + GIVE_UP_S:
                        res.error = f"no response.done {GIVE_UP_S:.0f} s after the utterance"
                        break
                    k += 1
            finally:
                receiver.cancel()
                await asyncio.gather(receiver, return_exceptions=True)
    except Exception as e:  # connection refused / closed (1013 too_many_sessions), timeouts
        if res.error is None:
            res.error = f"{type(e).__name__}: {str(e)[:120]}"
    res.text = "".join(deltas)
    res.ended = loop.time()
    if t_first_audio is not None and t_eos is not None:
        res.latency_ms = (t_first_audio - t_eos) * 1000.0
    if t_eos is not None and t_stopped is not None and t_created is not None:
        res.stopped_ms, res.created_ms = (t_stopped - t_eos) * 1000.0, (t_created - t_eos) * 1000.0
    res.ok = res.error is None and res.status is not None
    if res.ok and res.latency_ms is None:
        res.error, res.ok = "reply without audio", False
    return res


# -- phases -------------------------------------------------------------------------------
async def calibrate(port: int, utts: list[Utterance], steps: int) -> list[Result]:
    warm = await run_session(port, utts[0], steps)  # torch / allocator warm-up, not counted
    if warm.error:
        print(f"warm-up session failed: {warm.error}")
    results = []
    for u in utts:
        r = await run_session(port, u, steps)
        results.append(r)
        lat = f"{r.latency_ms:7.0f} ms" if r.latency_ms is not None else "      - ms"
        print(f"  utterance {u.index} ({u.voice:>8}, {u.seconds:.1f} s, {u.text!r:40}) alone: "
              f"{'ok' if r.ok else 'ERROR ' + str(r.error)}  latency {lat}  steps {r.decode_steps}  "
              f"reply {r.text[:50]!a}{'...' if len(r.text) > 50 else ''}")
    return results


async def load(port: int, utts: list[Utterance], steps: int, clients: int, seconds: float,
               server: subprocess.Popen) -> tuple[list[Result], float, list[tuple[int, int]]]:
    loop = asyncio.get_running_loop()
    results: list[Result] = []
    t0 = loop.time()
    end = t0 + seconds

    async def client(i: int):
        await asyncio.sleep(i / clients)  # spread the first connections over one second
        k = 0
        while loop.time() < end and server.poll() is None:
            results.append(await run_session(port, utts[(i + k) % len(utts)], steps))
            k += 1

    samples: list[tuple[int, int]] = []

    async def monitor():
        last_print = t0
        while True:
            await asyncio.sleep(1.0)
            h = await asyncio.to_thread(get_health, port, 5.0)
            if h is not None:
                samples.append((h["decoding"], h["waiting"]))
            now = loop.time()
            if now - last_print >= 5.0:
                last_print = now
                ok = sum(r.ok for r in results)
                bad = sum(not r.ok for r in results)
                load_s = f"decoding {h['decoding']:>2} waiting {h['waiting']:>2} sessions {h['sessions']:>2}" \
                    if h else "/health: no answer"
                print(f"  [{now - t0:5.1f} s] sessions completed {ok:4d}  errors {bad:3d}  {load_s}", flush=True)

    mon = asyncio.create_task(monitor())
    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        mon.cancel()
        await asyncio.gather(mon, return_exceptions=True)
    return results, loop.time() - t0, samples


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 clients for 15 s")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-steps", type=int, default=64, help="decode-step budget of one response")
    ap.add_argument("--max-sessions", type=int, default=None,
                    help="server max_sessions (default 2 x clients + 8: the server counts a closed session until "
                         "its event loop has handled the close, so a client's next session can overlap its last)")
    args = ap.parse_args()
    clients, seconds = (8, 15.0) if args.quick else (args.clients, args.seconds)
    steps = args.max_steps
    max_sessions = args.max_sessions or 2 * clients + 8

    tmp = tempfile.TemporaryDirectory(prefix="qinyu-bench-server-")
    root = Path(tmp.name)
    server = None
    log = root / "server.log"
    try:
        t = time.perf_counter()
        ck = build_checkpoint(root)
        utts = make_utterances()
        print(f"tiny speaking checkpoint and {len(utts)} espeak-ng utterances ready in "
              f"{time.perf_counter() - t:.1f} s")
        port = free_port()
        cfg = root / "server.json"
        cfg.write_text(json.dumps({"max_sessions": max_sessions, "max_steps": steps, "max_batch": 32,
                                   "library": str(root / "voices.sqlite")}))
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1])] +
                                            ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        with open(log, "wb") as f:
            server = subprocess.Popen([sys.executable, "-m", "qinyu.cli", "serve", "--model", str(ck), "--port",
                                       str(port), "--config", str(cfg)], stdout=f, stderr=subprocess.STDOUT, env=env)
        t = time.perf_counter()
        health = None
        while health is None and time.perf_counter() - t < 180:
            if server.poll() is not None:
                print(f"the server exited with status {server.returncode} before answering /health; its log:")
                print(tail(log))
                return 2
            health = get_health(port)
            if health is None:
                time.sleep(0.25)
        if health is None:
            print("the server did not answer /health within 180 s; its log:")
            print(tail(log))
            return 2
        print(f"server up on port {port} in {time.perf_counter() - t:.1f} s (OMP_NUM_THREADS="
              f"{env['OMP_NUM_THREADS']}, max_batch 32, max_steps {steps}, max_sessions {max_sessions}); "
              f"{os.cpu_count()} CPUs")

        print("calibration: each utterance alone")
        calib = asyncio.run(calibrate(port, utts, steps))
        if not all(r.ok for r in calib):
            print("calibration failed; server log:")
            print(tail(log))
            return 2
        reference = [r.text for r in calib]
        by_text = collections.defaultdict(list)
        for i, text in enumerate(reference):
            by_text[text].append(i)
        for text, idx in by_text.items():
            if len(idx) > 1:
                print(f"WARNING: utterances {idx} have the same calibrated reply {text[:60]!a}: "
                      "the text check cannot tell them apart")
        baseline = [r.latency_ms for r in calib]

        print(f"load: {clients} clients for {seconds:g} s")
        results, elapsed, samples = asyncio.run(load(port, utts, steps, clients, seconds, server))
        died = server.poll() is not None

        # cross-talk: texts, and ids seen by more than one session (calibration sessions included)
        owner: dict[str, int] = {}
        shared_ids = set()
        for r in calib + results:
            for i in r.ids:
                if owner.setdefault(i, r.serial) != r.serial:
                    shared_ids.add(i)
        crosstalk, mismatches = [], []
        for r in results:
            if r.status is None:  # no reply at all: nothing to compare
                continue
            own = reference[r.utterance]
            text_cross = r.text != own and any(r.text == t for j, t in enumerate(reference) if j != r.utterance)
            if text_cross or r.ids & shared_ids:
                crosstalk.append(r)
            elif r.text != own:
                mismatches.append(r)

        ok = [r for r in results if r.ok]
        errors = [r for r in results if not r.ok]
        lat = [r.latency_ms for r in ok]
        p50, p95, base50 = pct(lat, 50), pct(lat, 95), pct(baseline, 50)
        steps_total = sum(r.decode_steps for r in results)
        audio_total = sum(r.audio_ms for r in results) / 1000.0
        print()
        rows = [
            ("clients", f"{clients}"),
            ("seconds (load phase, wall)", f"{seconds:g} ({elapsed:.1f})"),
            ("sessions completed", f"{len(ok)}"),
            ("errors", f"{len(errors)}"),
            ("latency p50 under load (ms)", f"{p50:.0f}"),
            ("latency p95 under load (ms)", f"{p95:.0f}"),
            ("latency max under load (ms)", f"{max(lat) if lat else float('nan'):.0f}"),
            ("  p50 end of speech -> speech_stopped", f"{pct([r.stopped_ms for r in ok], 50):.0f}"),
            ("  p50 speech_stopped -> response.created",
             f"{pct([r.created_ms - r.stopped_ms for r in ok], 50):.0f}"),
            ("  p50 response.created -> first audio", f"{pct([r.latency_ms - r.created_ms for r in ok], 50):.0f}"),
            ("baseline p50 alone (ms)", f"{base50:.0f}"),
            ("  alone: p50 end of speech -> speech_stopped", f"{pct([r.stopped_ms for r in calib], 50):.0f}"),
            ("  alone: p50 speech_stopped -> response.created",
             f"{pct([r.created_ms - r.stopped_ms for r in calib], 50):.0f}"),
            ("  alone: p50 response.created -> first audio",
             f"{pct([r.latency_ms - r.created_ms for r in calib], 50):.0f}"),
            ("p50 load / p50 alone", f"{p50 / base50:.2f}"),
            ("p95 load / p50 alone", f"{p95 / base50:.2f}"),
            ("cross-talk (must be 0)", f"{len(crosstalk)}"),
            ("mismatches (nondeterminism)", f"{len(mismatches)}"),
            ("decode steps/s (sum of sessions)", f"{steps_total / elapsed:.1f}"),
            ("reply audio s per wall s", f"{audio_total / elapsed:.2f}"),
        ]
        if samples:
            dec = [d for d, _ in samples]
            wai = [w for _, w in samples]
            rows.append(("/health decoding mean / max", f"{np.mean(dec):.1f} / {max(dec)}"))
            rows.append(("/health waiting mean / max", f"{np.mean(wai):.1f} / {max(wai)}"))
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"  {k:<{width}}  {v:>14}")
        if errors:
            print("errors by reason:")
            for reason, n in collections.Counter(r.error for r in errors).most_common():
                print(f"  {n:5d}  {reason}")
        for r in crosstalk:
            print(f"CROSS-TALK session {r.serial} (utterance {r.utterance}): reply {r.text[:60]!a}; "
                  f"shared ids {sorted(r.ids & shared_ids)[:5]}")
        for r in mismatches[:20]:
            print(f"mismatch: session {r.serial} (utterance {r.utterance}) replied {r.text[:60]!a}, "
                  f"calibrated {reference[r.utterance][:60]!a}")
        if died:
            print(f"the server died (status {server.returncode}); the tail of its log:")
        if died or errors:
            print(tail(log))
        print(f"RESULT sessions={len(ok)} errors={len(errors)} p50_ms={p50:.0f} p95_ms={p95:.0f} "
              f"baseline_p50_ms={base50:.0f} crosstalk={len(crosstalk)} mismatches={len(mismatches)}")
        return 1 if crosstalk else 0
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
