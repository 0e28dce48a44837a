"""What every benchmark runner shares: the model under test, resumable per-item
generation in batches, recognisers for "ASR of the reply", and failure bookkeeping.

A run has two phases. **Generation**: the model answers every item through the engine,
a batch of items at a time (multi-turn items advance one turn per batch step, so their
history holds the model's own earlier replies); each finished item's outputs (text,
audio) are written atomically and a record file is written last, so an interrupted run
resumes by skipping every item whose record exists. **Scoring**: judge, recogniser or
reward model, per item; a failure (missing audio, malformed line, judge down, judge
answer that does not parse) is kept with its reason and counted as ``failed`` in the
report — never dropped, never scored as correct.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np


class RunnerError(ValueError):
    """Bad arguments or data layout for a whole run (names the file or field)."""


class ItemError(Exception):
    """One item cannot be run or scored; the message is the reason recorded for it."""


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=1) + "\n")


def atomic_write_wav(path: Path, wav: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        # the format is given explicitly: the temporary name has no .wav suffix to infer it from
        sf.write(tmp, np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0), sample_rate, format="WAV",
                 subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def safe_name(key: str) -> str:
    """A file name for an item key (keys come from data files: utterance ids, paths).
    A key that is not a plain name gets a short hash, so "a/b" and "a_b" stay apart."""
    name = re.sub(r"[^\w.\-]+", "_", key, flags=re.UNICODE).strip("._")
    if name == key:
        return name
    import hashlib

    return f"{name or '_'}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}"


class ItemStore:
    """One JSON record per finished item under ``root``; a record is the item's
    completion mark, written after its outputs. ``outputs`` in a record lists the files
    (relative to the run folder) that must still exist for the record to count."""

    def __init__(self, run_dir: Path, name: str = "items"):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / name

    def path(self, key: str) -> Path:
        return self.root / (safe_name(key) + ".json")

    def load(self, key: str) -> dict | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged record: the item is generated again
        if rec.get("key") != key or not all((self.run_dir / f).is_file() for f in rec.get("outputs", [])):
            return None
        return rec

    def save(self, key: str, record: dict) -> None:
        atomic_write_json(self.path(key), {**record, "key": key})


# --------------------------------------------------------------------------------------
# the model under test
# --------------------------------------------------------------------------------------
@dataclass
class Reply:
    text: str
    audio: np.ndarray | None  # None: the checkpoint names no codec
    sample_rate: int | None
    finished: str
    steps: int


AUDIO_TURN_CACHE = 512  # user turns SpeechModel keeps for reuse (the nano held-out split has 256 files)


class SpeechModel:
    """A loaded checkpoint (model, tokenizer, codec, speech front end, speaker encoder)
    that answers many requests at once through ``qinyu.engine.generate``."""

    def __init__(self, model_dir, max_steps: int = 1024, temperature: float = 0.0, seed: int = 0,
                 device: str = "cpu"):
        from ...engine import SamplingParams
        from ...engine.session import load_session

        self.model_dir = Path(model_dir)
        self.params = SamplingParams(temperature=temperature, max_steps=max_steps, seed=seed)
        self.base = load_session(model_dir, params=self.params)
        if device != "cpu":  # the engine feeds inputs on the model's device and samples on the CPU
            self.base.model.to(device)
        self.model, self.tokenizer, self.codec = self.base.model, self.base.tokenizer, self.base.codec
        self.speaker_encoder = self.base.speaker_encoder
        # (file, its size and mtime, prompt, ...) -> the user turn made of it: a benchmark gives
        # the same utterance again in later items' histories (the nano held-out split: 304 user
        # turns of 256 files), and its features and CAM++ vector are the same each time. The
        # AUDIO_TURN_CACHE most recently used are kept, so a benchmark of thousands of utterances
        # does not hold all their features
        self._audio_turns: OrderedDict[tuple, object] = OrderedDict()

    @property
    def name(self) -> str:
        return self.model_dir.name

    def session(self, persona=None):
        """A fresh conversation sharing the loaded parts; the history is never cut
        (benchmarks give the whole dialogue)."""
        from ...engine.session import Persona, Session

        return Session(self.model, self.tokenizer, self.codec, front_end=self.base.front_end,
                       speaker_encoder=self.speaker_encoder, persona=persona or Persona(), params=self.params,
                       max_history=1 << 20)

    def audio_turn(self, session, path: Path, prompt: str | None = None):
        """A user turn from an audio file; a missing or unreadable file is an ItemError."""
        from ...audio.io import AudioError, load_audio
        from ...engine import EngineError

        path = Path(path)
        if not path.is_file():
            raise ItemError(f"audio file not found: {path}")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, prompt,  # and what the session makes it with
               id(session.front_end), id(session.speaker_encoder), session.max_audio_seconds)
        if key not in self._audio_turns:
            try:
                self._audio_turns[key] = session.user_turn(audio=load_audio(path), prompt=prompt)
            except (AudioError, EngineError) as e:
                raise ItemError(str(e)) from None
            while len(self._audio_turns) > AUDIO_TURN_CACHE:
                self._audio_turns.popitem(last=False)
        self._audio_turns.move_to_end(key)
        return replace(self._audio_turns[key])  # a turn of its own; the arrays, never written to, shared

    def generate(self, requests: list) -> list[Reply | Exception]:
        """Decode the requests together; if the batch fails (e.g. one prompt is too long
        for the context), each request is decoded alone so only the bad one fails."""
        from ...engine import generate

        if not requests:
            return []
        try:
            results = generate(self.model, requests, max_batch=len(requests))
        except Exception as e:  # the item fails with the engine's message
            if len(requests) == 1:
                return [e]
            return [reply for r in requests for reply in self.generate([r])]
        return [self._reply(r) for r in results]

    def _reply(self, result) -> Reply:
        from ...engine.reply import visible_text

        text = visible_text(self.tokenizer, self.model.layout, result.text_ids)
        audio, sr = None, None
        if self.codec is not None:
            sr = self.codec.output_sample_rate
            audio = self.codec.decode(result.codes) if result.codes.shape[1] else np.zeros(0, np.float32)
            audio = np.asarray(audio, dtype=np.float32)
        return Reply(text, audio, sr, result.finished, result.steps)

    def transcribe(self, audios: list[tuple[np.ndarray, int]]) -> list[str | Exception]:
        """The model's own ASR prompt ("Convert the speech to text."), batched."""
        from ...layout import ASR_PROMPT

        session = self.session()
        requests, index, out = [], [], [None] * len(audios)
        for i, (wav, sr) in enumerate(audios):
            try:
                turn = session.user_turn(audio=(wav, sr), prompt=ASR_PROMPT)
                requests.append(session.request(turn, with_history=False, with_persona=False))
                index.append(i)
            except Exception as e:
                out[i] = e
        for i, reply in zip(index, self.generate(requests)):
            out[i] = reply if isinstance(reply, Exception) else reply.text.strip()
        return out


# --------------------------------------------------------------------------------------
# recognisers for "ASR of the reply"
# --------------------------------------------------------------------------------------
class Recogniser:
    """``transcribe(list of (wav, sr)) -> list of text or Exception``; ``name`` goes in the scorer column."""

    name = "recogniser"

    def transcribe(self, audios: list[tuple[np.ndarray, int]]) -> list[str | Exception]:
        raise NotImplementedError


class SLMRecogniser(Recogniser):
    """The model under test transcribing with its own ASR prompt: available offline,
    but not the protocol's recogniser (and a model hearing itself is a lenient judge)."""

    def __init__(self, model: SpeechModel, batch: int = 8):
        self.model, self.batch = model, batch
        self.name = f"slm ({model.name}'s own ASR prompt; not the protocol's recogniser)"

    def transcribe(self, audios):
        out = []
        for start in range(0, len(audios), self.batch):
            out += self.model.transcribe(audios[start:start + self.batch])
        return out


class WhisperRecogniser(Recogniser):
    def __init__(self, path, language: str | None = None, device: str = "cpu"):
        from ...duplex.asr import WhisperASR
        from ..judge import ScorerMissing

        path = Path(path)
        weights = path.is_dir() and (list(path.glob("*.safetensors")) or list(path.glob("*.bin")))
        missing = [f for f in WhisperASR.NEEDED if not (path / f).is_file()]
        if missing or not weights:
            raise ScorerMissing(f"Whisper folder {path} is missing or incomplete (needs {', '.join(WhisperASR.NEEDED)} "
                                f"and the weights): download openai/whisper-large-v3 (Hugging Face) and pass "
                                f"--asr whisper:DIR")
        self.asr = WhisperASR(path, language=language, device=device)
        self.name = f"whisper ({Path(path).name}" + (f", language={language})" if language else ")")

    def transcribe(self, audios):
        from ...audio.io import resample

        out = []
        for wav, sr in audios:
            try:
                out.append(self.asr.transcribe(resample(wav, sr, 16000), 16000))
            except Exception as e:
                out.append(e)
        return out


class ParaformerRecogniser(Recogniser):
    """FunASR Paraformer from a local folder (URO adds fsmn-vad and ct-punc-c; Seed-TTS does not)."""

    def __init__(self, path, vad: str | None = None, punc: str | None = None, device: str = "cpu"):
        from ..judge import ScorerMissing

        try:
            from funasr import AutoModel  # noqa: F401  (optional dependency)
        except ImportError:
            raise ScorerMissing("paraformer-zh needs the funasr package (pip install funasr) and a local "
                                "paraformer-zh model folder (modelscope iic/speech_paraformer-large_asr_nat-zh-cn-"
                                "16k-common-vocab8404-pytorch)") from None
        if not Path(path).is_dir():
            raise ScorerMissing(f"paraformer-zh model folder not found: {path}")
        kw = {k: v for k, v in (("vad_model", vad), ("punc_model", punc)) if v}
        self.asr = AutoModel(model=str(path), disable_update=True, device=device, **kw)
        self.name = f"paraformer ({Path(path).name})"

    def transcribe(self, audios):
        from ...audio.io import resample

        out = []
        for wav, sr in audios:
            try:
                res = self.asr.generate(input=resample(wav, sr, 16000), batch_size_s=300)
                out.append(res[0]["text"] if res else "")
            except Exception as e:
                out.append(e)
        return out


def parse_asr_specs(specs: list[str] | None) -> dict[str, str]:
    """``["whisper:DIR", "zh=paraformer:DIR", "slm"]`` -> {"*": "whisper:DIR", "zh": "paraformer:DIR"}."""
    out: dict[str, str] = {}
    for spec in specs or []:
        lang, _, rest = spec.partition("=") if re.match(r"^[a-z]{2}=", spec) else ("", "", spec)
        kind = rest.split(":", 1)[0]
        if kind not in ("slm", "whisper", "paraformer"):
            raise RunnerError(f"--asr {spec!r}: expected [LANG=]slm, [LANG=]whisper:DIR or [LANG=]paraformer:DIR")
        if kind != "slm" and ":" not in rest:
            raise RunnerError(f"--asr {spec!r}: {kind} needs a local model folder ({kind}:DIR)")
        out[lang or "*"] = rest
    return out


# --------------------------------------------------------------------------------------
# a run
# --------------------------------------------------------------------------------------
@dataclass
class JudgeConfig:
    url: str
    model: str
    key: str | None = None
    retries: int | None = None
    timeout_s: float | None = None


@dataclass
class RunOptions:
    model: Path | str
    data: Path | str
    out: Path | str
    limit: int | None = None
    batch: int = 8
    max_steps: int = 1024
    judge: JudgeConfig | Any | None = None  # a JudgeConfig, or a ready judge object (.chat, .model)
    asr: list[str] | None = None  # --asr specs
    normaliser: str | None = None
    judge_text: bool = False  # URO: judge the text reply instead of an ASR transcript of the speech
    reward_model: Any | None = None  # CharacterEval: an object with .score(...) and .name, or a folder
    judge_prompts: Path | str | None = None  # C3, URO: the benchmark's judge prompts (a JSON file; docs/eval.md)
    subsets: list[str] | None = None
    progress: bool = True
    label: str | None = None
    device: str = "auto"  # the model (and Whisper): "auto" = cuda when available, else cpu

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


class Run:
    """State of one benchmark run: options, the lazily loaded model, the item stores."""

    def __init__(self, bench: str, options: RunOptions):
        self.bench, self.options = bench, options
        self.data = Path(options.data)
        self.out = Path(options.out)
        if not self.data.exists():
            raise RunnerError(f"--data {self.data} does not exist")
        if options.limit is not None and options.limit < 1:
            raise RunnerError(f"--limit must be >= 1, got {options.limit}")
        if options.batch < 1:
            raise RunnerError(f"--batch must be >= 1, got {options.batch}")
        self.out.mkdir(parents=True, exist_ok=True)
        self._check_generation_settings()
        self._model: SpeechModel | None = None
        self._recognisers: dict[str, Recogniser] = {}
        self.generated = 0  # items generated in this run
        self.reused = 0  # items found finished on disk
        self.items: list[dict] = []  # per-item results for items.jsonl
        self.notes: list[str] = []

    def _check_generation_settings(self) -> None:
        """Replies on disk are reused only for the same benchmark, checkpoint, data and
        decoding budget; otherwise a resumed run would mix two models' answers in one number."""
        settings = {"benchmark": self.bench, "model": str(Path(self.options.model).resolve()),
                    "data": str(self.data.resolve()), "max_steps": self.options.max_steps}
        path = self.out / "generation.json"
        if path.is_file():
            try:
                before = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                before = None
            if isinstance(before, dict):
                changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v]
                if changed:
                    raise RunnerError(f"{self.out} holds replies generated with other settings ({'; '.join(changed)}):"
                                      f" use another --out, or delete {self.out} to start over")
        atomic_write_json(path, settings)

    # -- parts loaded on demand ------------------------------------------------------
    @property
    def model(self) -> SpeechModel:
        if self._model is None:
            self._model = SpeechModel(self.options.model, max_steps=self.options.max_steps,
                                      device=self.options.resolved_device())
        return self._model

    def judge(self, protocol: str, **settings):
        """The configured judge with the benchmark's own sampling settings (``settings``:
        Judge keyword arguments), or ScorerMissing naming the ``protocol``'s judge."""
        from ..judge import Judge, ScorerMissing

        cfg = self.options.judge
        if cfg is None:
            raise ScorerMissing(f"{self.bench} is scored by an LLM judge and none is configured: pass --judge-url "
                                f"URL --judge-model NAME (an OpenAI-compatible endpoint; the protocol uses {protocol})")
        if not isinstance(cfg, JudgeConfig):
            return cfg  # a ready judge object (tests, other callers)
        if cfg.retries is not None:
            settings["retries"] = cfg.retries
        if cfg.timeout_s is not None:
            settings["timeout_s"] = cfg.timeout_s
        return Judge(cfg.url, cfg.model, api_key=cfg.key, cache_dir=str(self.out / "cache" / "judge"), **settings)

    def recogniser(self, lang: str, protocol: str, whisper_language: str | None = None,
                   paraformer_vad: str | None = None, paraformer_punc: str | None = None) -> Recogniser:
        """The recogniser configured for ``lang`` (``--asr LANG=...`` or ``--asr ...``);
        none configured -> ScorerMissing naming what the protocol uses."""
        from ..judge import ScorerMissing

        specs = parse_asr_specs(self.options.asr)
        spec = specs.get(lang) or specs.get("*")
        if spec is None:
            raise ScorerMissing(f"{self.bench} ({lang}) is scored on an ASR transcript and no recogniser is "
                                f"configured: the protocol uses {protocol}. Pass --asr whisper:DIR (a local "
                                f"Whisper folder) or --asr paraformer:DIR, or --asr slm for the model's own ASR "
                                f"prompt (offline, not the protocol's recogniser)")
        if spec not in self._recognisers:
            kind, _, path = spec.partition(":")
            if kind == "slm":
                self._recognisers[spec] = SLMRecogniser(self.model, self.options.batch)
            elif kind == "whisper":
                self._recognisers[spec] = WhisperRecogniser(path, language=whisper_language,
                                                            device=self.options.resolved_device())
            else:
                self._recognisers[spec] = ParaformerRecogniser(path, vad=paraformer_vad, punc=paraformer_punc,
                                                               device=self.options.resolved_device())
        return self._recognisers[spec]

    def progress(self, total: int, desc: str, initial: int = 0):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="item", disable=not self.options.progress,
                    file=sys.stderr, dynamic_ncols=True, leave=False)

    def limited(self, items: list) -> list:
        return items if self.options.limit is None else items[: self.options.limit]

    def select_subsets(self, found: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """The (name, value) pairs the run's ``--subset`` options ask for (all when none);
        a name that is not among ``found`` is an error naming what there is."""
        if not self.options.subsets:
            return found
        names = [name for name, _ in found]
        unknown = set(self.options.subsets) - set(names)
        if unknown:
            raise RunnerError(f"--subset {', '.join(sorted(unknown))}: not found in {self.data} (found "
                              f"{', '.join(names)})")
        return [(name, value) for name, value in found if name in self.options.subsets]

    def save_reply_audio(self, rel: str, reply) -> list[str]:
        """Write a reply's speech (if it has any) under the output folder; its relative path, or nothing."""
        if reply.audio is None:
            return []
        atomic_write_wav(self.out / rel, reply.audio, reply.sample_rate)
        return [rel]

    # -- generation ------------------------------------------------------------------
    def generate(self, items: list["Item"], store: ItemStore, turns: Callable[["Item"], int],
                 build: Callable[["Item", int, list[Reply], Any], Any], save: Callable[["Item", list[Reply]], dict],
                 desc: str, start: Callable[["Item"], Any] | None = None) -> dict[str, dict]:
        """Generate every item not yet finished; returns key -> record (``status`` ok|failed).

        ``turns(item)`` user turns; ``start(item)`` makes per-item state (e.g. a Session)
        passed to ``build(item, turn_index, replies_so_far, state) -> Request``;
        ``save(item, replies) -> record`` writes the outputs and returns the record
        (with ``outputs``), stored last."""
        records: dict[str, dict] = {}
        todo = []
        for it in items:
            if it.error:
                records[it.key] = {"status": "failed", "reason": it.error, "stage": "input"}
                continue
            rec = store.load(it.key)
            if rec is not None:
                records[it.key] = {**rec, "status": "ok"}
                self.reused += 1
            else:
                todo.append(it)
        bar = self.progress(len(items), f"{desc}: generate", initial=len(items) - len(todo))
        batch = self.options.batch
        for b in range(0, len(todo), batch):
            chunk = todo[b:b + batch]
            state = {it.key: (start(it) if start else None) for it in chunk}
            replies: dict[str, list[Reply]] = {it.key: [] for it in chunk}
            failed: dict[str, str] = {}
            for j in range(max(turns(it) for it in chunk)):
                live = [it for it in chunk if it.key not in failed and j < turns(it)]
                requests, ok = [], []
                for it in live:
                    try:
                        requests.append(build(it, j, replies[it.key], state[it.key]))
                        ok.append(it)
                    except Exception as e:  # a bad item (missing audio, prompt too long) fails alone
                        failed[it.key] = _reason(e)
                for it, rep in zip(ok, self.model.generate(requests)):
                    if isinstance(rep, Exception):
                        failed[it.key] = f"generation failed: {_reason(rep)}"
                    else:
                        replies[it.key].append(rep)
            for it in chunk:
                if it.key in failed:
                    records[it.key] = {"status": "failed", "reason": failed[it.key], "stage": "generation"}
                    continue
                try:
                    rec = save(it, replies[it.key])
                except Exception as e:
                    records[it.key] = {"status": "failed", "reason": f"saving outputs: {_reason(e)}",
                                       "stage": "generation"}
                    continue
                store.save(it.key, rec)
                records[it.key] = {**rec, "key": it.key, "status": "ok"}
                self.generated += 1
            bar.update(len(chunk))
        bar.close()
        return records

    # -- recognising replies, with a cache per item ------------------------------------
    def transcribe_replies(self, recogniser: Recogniser, wav_paths: dict[str, Path]) -> dict[str, str | Exception]:
        """ASR of each item's reply audio; cached under cache/asr by recogniser name, so a
        re-run does not transcribe again. An empty reply is "" without calling the recogniser."""
        from ...audio.io import AudioError, load_audio

        import hashlib

        # one cache per recogniser: its first word, and a hash of its full name (model folder, language)
        tag = hashlib.sha1(recogniser.name.encode("utf-8")).hexdigest()[:10]
        cache = ItemStore(self.out, f"cache/asr/{safe_name(recogniser.name.split()[0])}-{tag}")
        out: dict[str, str | Exception] = {}
        todo: list[tuple[str, tuple[np.ndarray, int]]] = []
        for key, path in wav_paths.items():
            hit = cache.load(key)
            if hit is not None:
                out[key] = hit["text"]
                continue
            try:
                import soundfile as sf

                if sf.info(str(path)).frames == 0:
                    out[key] = ""
                    continue
                todo.append((key, load_audio(path)))
            except (AudioError, RuntimeError, OSError) as e:
                out[key] = ItemError(f"cannot read the reply audio {path}: {e}")
        bar = self.progress(len(todo), "ASR of the replies")
        step = max(1, self.options.batch)
        for b in range(0, len(todo), step):
            chunk = todo[b:b + step]
            for (key, _), text in zip(chunk, recogniser.transcribe([a for _, a in chunk])):
                out[key] = text
                if not isinstance(text, Exception):
                    cache.save(key, {"text": text, "scorer": recogniser.name})
            bar.update(len(chunk))
        bar.close()
        return out


# --------------------------------------------------------------------------------------
# judge prompts supplied by the user
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromptFile:
    """A JSON file of judge prompts given with ``--judge-prompts``. The benchmarks' own
    prompt texts are not shipped with qinyu; the user passes the published file (C3) or a
    file filled from the published script (URO), and reports name it by ``label``."""

    path: Path
    data: Any
    sha256: str

    @property
    def label(self) -> str:
        """File name and hash prefix: what the report's judge column says."""
        return f"{self.path.name} sha256:{self.sha256[:12]}"

    def describe(self) -> str:
        return f"{self.path.resolve()} (sha256 {self.sha256[:12]})"

    def text(self, *keys: str, needed_by: str | None = None) -> str:
        """The string at ``data[k1][k2]...``; a missing key is a RunnerError naming it and the file."""
        node = self.data
        for depth, key in enumerate(keys):
            if not isinstance(node, dict):
                raise RunnerError(f"--judge-prompts {self.path}: {key_path(keys[:depth])} must be a JSON object")
            if key not in node:
                why = f" (needed by {needed_by})" if needed_by else ""
                raise RunnerError(f"--judge-prompts {self.path}: key {key_path(keys[:depth + 1])} is missing{why}")
            node = node[key]
        if not isinstance(node, str):
            raise RunnerError(f"--judge-prompts {self.path}: {key_path(keys)} must be a string, got "
                              f"{type(node).__name__}")
        return node

    def check_placeholders(self, keys: tuple[str, ...], found, allowed) -> None:
        """RunnerError when the template at ``keys`` uses a placeholder the runner does not fill."""
        unknown = sorted(set(found) - set(allowed))
        if unknown:
            raise RunnerError(f"--judge-prompts {self.path}: {key_path(keys)} uses unknown placeholder(s) "
                              f"{', '.join('{' + u + '}' for u in unknown)}; this prompt is filled with "
                              f"{', '.join('{' + a + '}' for a in sorted(allowed))}")


def key_path(keys) -> str:
    return "".join(f"[{k!r}]" for k in keys) or "the top level"


def load_prompt_file(path: Path | str | None, missing: str) -> PromptFile:
    """The ``--judge-prompts`` file; none given -> ScorerMissing(``missing``), which names
    the file the benchmark needs and where it is published."""
    import hashlib

    from ..judge import ScorerMissing

    if path is None:
        raise ScorerMissing(missing)
    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"--judge-prompts {path}: file not found")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunnerError(f"--judge-prompts {path} is not valid UTF-8 JSON: {e}") from None
    if not isinstance(data, dict):
        raise RunnerError(f"--judge-prompts {path}: expected a JSON object, got {type(data).__name__}")
    return PromptFile(path, data, hashlib.sha256(raw).hexdigest())


@dataclass
class Item:
    key: str
    data: dict = field(default_factory=dict)
    error: str | None = None  # a load-time problem: recorded as failed, never generated


def _reason(e: BaseException) -> str:
    msg = str(e).strip()
    return msg if isinstance(e, ItemError) else f"{type(e).__name__}: {msg}"


def reason(e: BaseException) -> str:
    return _reason(e)


def score_row(bench: str, metric: str, value: float | None, n: int, failed: int, *, subset: str | None = None,
              normaliser: str | None = None, aggregation: str, judge: str | None = None,
              scorer: str | None = None, **extra) -> dict:
    """A score for the report, with the fields every number must carry."""
    return {"benchmark": bench, "subset": subset, "metric": metric,
            "value": None if value is None else round(float(value), 4), "n": int(n), "failed": int(failed),
            "normaliser": normaliser, "aggregation": aggregation, "judge": judge, "scorer": scorer,
            "quoted": False, **extra}


def mostly_chinese(texts) -> bool:
    """True when most letters of the texts are CJK ideographs (CER rather than WER)."""
    cjk = other = 0
    for t in texts:
        for ch in t:
            if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf":
                cjk += 1
            elif ch.isalpha():
                other += 1
    return cjk > other


def read_json(path: Path, what: str):
    """A JSON file or a RunnerError naming it."""
    path = Path(path)
    if not path.is_file():
        raise RunnerError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunnerError(f"{path} is not valid JSON ({what}): {e}") from None
