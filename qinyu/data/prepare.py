"""Data preparation: training JSONL files (``qinyu.data.schema``) -> cached model inputs.

A config (YAML file or dict; paths relative to the config file's folder)::

    inputs: [corpus/train.jsonl, corpus/extra.jsonl]
    output: prepared                   # output folder
    codec: codecs/nano                 # codec folder: assistant speech -> codes
    speaker_encoder: encoders/campplus # optional: SpeakerEncoder folder or official campplus_cn_common.bin
    cmvn: null                         # optional am.mvn for the user-speech front end
    voices: null                       # optional voice table: .sqlite voice library or spk2embeds .pt
    workers: 2                         # processes computing codes, features and CAM++ vectors

The output folder::

    <stem>.prepared.jsonl     one line per good sample of <stem>.jsonl (format below)
    <stem>.errors.jsonl       one line per problem of a skipped sample:
                              {"file", "line", "field", "message"} (empty when none)
    manifest.json             config, counts per input, codec type and frame rate, seconds of audio
    cache/codes/<key>.npy     int64 (8, T) codec codes of an assistant audio
    cache/features/<key>.npy  float32 [T, 560] SenseVoice front-end features of a user audio
    cache/speaker/<key>.npy   float32 [192] CAM++ vector of an audio (user audio, assistant
                              audio for the default voice, or a voice clip)
    cache/voice/<sha1>.npy    float32 [192] a sample's assistant voice, named by the sha1 of its bytes

``<key>`` is the sha1 of (the sha1 of the audio file's bytes, the fingerprint of the model
that made the array), so the same audio under any name is computed once, a changed model
gets new entries, and a re-run or a run resumed after a crash computes only what is
missing. Every file is written to a temporary name and renamed into place, so an
interrupted run never leaves a half-written entry under a final name.

One prepared line (paths relative to the output folder; ``speaker``/``voice`` are null
when not computed; ``frames`` is T of the array; ``source`` is the audio path as the
input gave it; ``meta`` is copied when the input has it)::

    {"id": "greet-001", "task": "chat", "messages": [...as in the input...],
     "audio": [{"role": "user", "source": "wavs/q1.wav", "features": "cache/features/<key>.npy",
                "frames": 61, "speaker": "cache/speaker/<key>.npy"},
               {"role": "assistant", "source": "wavs/a1.wav", "codes": "cache/codes/<key>.npy", "frames": 44}],
     "voice": "cache/voice/<sha1>.npy"}

The assistant voice comes from ``voice.speaker`` (the voice table), ``voice.vector`` (a
.npy or .pt file), ``voice.clip`` (the CAM++ vector of that clip) or, by default, the mean
of the CAM++ vectors of the sample's assistant audios (the reference's default); it is
null when no speaker encoder is configured and the sample names no voice.

Bad samples are skipped and listed, never fatal: a line that is not JSON, a sample
``check_sample`` rejects, an unknown voice name, or audio the models cannot process.
Only one run at a time may use an output folder (a run removes the temporary files
an interrupted run left behind).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .schema import Problem, audio_roles, check_sample, read_jsonl

CONFIG_KEYS = ("inputs", "output", "codec", "speaker_encoder", "cmvn", "voices", "workers", "speaker_dtype")
# Bump a version when the computation of its kind changes, so old cache entries are not reused.
KIND_VERSIONS = {"codes": "codes/1", "features": "features/1 sensevoice lfr7/6 mel80", "speaker": "speaker/1 vita"}


class ConfigError(ValueError):
    """A prepare config that cannot run (named file, key and reason)."""


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------
@dataclass
class PrepareConfig:
    inputs: list[Path]
    output: Path
    codec: Path
    speaker_encoder: Path | None = None
    cmvn: Path | None = None
    voices: Path | None = None
    workers: int = 1
    speaker_dtype: str = "fp32"  # "bf16": CAM++ under bf16 autocast (2.6x on CPUs with AVX-512 BF16)

    def to_json(self) -> dict:
        return {"inputs": [str(p) for p in self.inputs], "output": str(self.output), "codec": str(self.codec),
                "speaker_encoder": _str_or_none(self.speaker_encoder), "cmvn": _str_or_none(self.cmvn),
                "voices": _str_or_none(self.voices), "workers": self.workers, "speaker_dtype": self.speaker_dtype}


def _str_or_none(p) -> str | None:
    return None if p is None else str(p)


def load_config(config, base=None) -> PrepareConfig:
    """A YAML file path or a dict -> PrepareConfig with absolute paths. Relative paths are
    resolved against the YAML file's folder (for a dict: ``base``, else the current folder).
    Raises ConfigError naming the key and the reason."""
    where = "prepare config"
    if isinstance(config, PrepareConfig):
        return config
    if isinstance(config, (str, Path)):
        import yaml

        path = Path(config)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"prepare config not found: {path}")
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        base = path.resolve().parent
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: expected a mapping of {list(CONFIG_KEYS)}, got {type(config).__name__}")
    base = Path(base).resolve() if base is not None else Path.cwd()
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {list(CONFIG_KEYS)}")

    def path_of(key, required, must_exist=True) -> Path | None:
        value = config.get(key)
        if value is None or value == "":
            if required:
                raise ConfigError(f"{where}: '{key}' is required")
            return None
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: '{key}' must be a path, got {value!r}")
        p = Path(value).expanduser()
        p = p if p.is_absolute() else base / p
        if must_exist and not p.exists():
            raise ConfigError(f"{where}: '{key}': not found: {p}")
        return p

    inputs = config.get("inputs")
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise ConfigError(f"{where}: 'inputs' must be a non-empty list of JSONL files")
    input_paths = []
    for i, p in enumerate(inputs):
        if not isinstance(p, (str, Path)):
            raise ConfigError(f"{where}: 'inputs[{i}]' must be a path, got {p!r}")
        p = Path(p).expanduser()
        p = p if p.is_absolute() else base / p
        if not p.is_file():
            raise ConfigError(f"{where}: 'inputs[{i}]': data file not found: {p}")
        input_paths.append(p)
    stems = [p.stem for p in input_paths]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise ConfigError(f"{where}: 'inputs': several files named {clash} would write the same "
                          f"<stem>.prepared.jsonl; rename them")
    workers = config.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{where}: 'workers' must be a positive integer, got {workers!r}")
    speaker_dtype = config.get("speaker_dtype", "fp32")
    if speaker_dtype not in ("fp32", "bf16"):
        raise ConfigError(f"{where}: 'speaker_dtype' must be fp32 or bf16, got {speaker_dtype!r}")
    return PrepareConfig(inputs=input_paths, output=path_of("output", True, must_exist=False),
                         codec=path_of("codec", True), speaker_encoder=path_of("speaker_encoder", False),
                         cmvn=path_of("cmvn", False), voices=path_of("voices", False), workers=workers,
                         speaker_dtype=speaker_dtype)


# --------------------------------------------------------------------------------------
# Models (loaded once in the parent to check them, once per worker to use them)
# --------------------------------------------------------------------------------------
def _load_speaker_encoder(path: Path):
    from qinyu.voice.campplus import SpeakerEncoder

    # a folder written by SpeakerEncoder.save, or the official campplus_cn_common.bin
    if path.is_dir() and (path / "speaker_encoder.json").is_file():
        return SpeakerEncoder.load(path)
    return SpeakerEncoder.from_official(path)


def _load_models(spec: dict) -> dict:
    from qinyu.audio.fbank import SenseVoiceFrontEnd
    from qinyu.codec import load_codec

    return {"codec": load_codec(spec["codec"]),
            "frontend": SenseVoiceFrontEnd.from_mvn(spec["cmvn"]) if spec["cmvn"] else SenseVoiceFrontEnd(),
            "speaker": _load_speaker_encoder(Path(spec["speaker_encoder"])) if spec["speaker_encoder"] else None,
            "speaker_dtype": spec.get("speaker_dtype", "fp32")}


def _head_tail_digest(path: Path, block: int = 1 << 20) -> str:
    """sha1 of a model file's size, first and last MiB: cheap even for multi-GB weights, and
    any retrained or fine-tuned weights differ there (small files are hashed whole)."""
    h = hashlib.sha1()
    size = path.stat().st_size
    h.update(f"{size}\0".encode())
    with path.open("rb") as f:
        h.update(f.read(block))
        if size > 2 * block:
            f.seek(size - block)
        h.update(f.read())
    return h.hexdigest()


def _fingerprint(*paths: Path | None, label: str) -> str:
    """The identity of the model files behind a kind of cache entry: a changed model
    gives other keys, so stale arrays are never reused."""
    h = hashlib.sha1(label.encode())
    for p in paths:
        if p is None:
            h.update(b"\0none")
            continue
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")) if p.is_dir() else [p]
        for f in files:
            h.update(f"\0{f.name}\0{_head_tail_digest(f)}".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file and rename it into place: a crash or kill leaves
    either the old file, no file, or the complete new one under ``path``."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes reach the disk before the name does
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: leave no partial file behind
        raise


def _save_npy(path: Path, array: np.ndarray) -> None:
    _write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def _write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# --------------------------------------------------------------------------------------
# Workers: one job per distinct audio content, computing the cache entries it lacks
# --------------------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(spec: dict) -> None:
    import torch

    # the machine is shared by `workers` processes: one thread each
    torch.set_num_threads(1)
    # Ctrl-C goes to the parent, which stops the pool; workers must not die mid-write on their own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER.update(_load_models(spec))


def _compute(models: dict, kind: str, wav: np.ndarray, sr: int) -> np.ndarray:
    from qinyu.audio.io import resample

    if kind == "codes":
        codes = np.asarray(models["codec"].encode(wav, sr), dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] != 8 or codes.shape[1] == 0:
            raise ValueError(f"the codec returned codes of shape {codes.shape}, expected (8, T>0)")
        return codes
    if kind == "features":
        feats = models["frontend"](resample(wav, sr, 16000), 16000)
        if len(feats) == 0:
            raise ValueError(f"{len(wav) / sr * 1000:.1f} ms of audio is too short for one feature frame (25 ms)")
        return feats.astype(np.float32)
    if kind == "speaker":
        return np.asarray(models["speaker"].embed(wav, sr, dtype=models["speaker_dtype"]), dtype=np.float32)
    raise ValueError(f"unknown cache kind {kind!r}")


def _run_job(job: tuple) -> tuple[str, str | None]:
    """(digest, audio path, [(kind, output path)]) -> (digest, error message or None)."""
    from qinyu.audio.io import load_audio

    digest, path, outputs = job
    try:
        wav, sr = load_audio(path)  # native rate: each model resamples as it needs
        for kind, out in outputs:
            _save_npy(Path(out), _compute(_WORKER, kind, wav, sr))
    except Exception as e:  # one bad audio must not stop the run: it skips the samples using it
        message = str(e) if str(path) in str(e) else f"{path}: {type(e).__name__}: {e}"
        return digest, message
    return digest, None


# --------------------------------------------------------------------------------------
# Planning (parent): which arrays each good sample needs
# --------------------------------------------------------------------------------------
@dataclass
class AudioRef:
    field: str        # "audios[j]" or "voice.clip", for error messages
    role: str         # "user", "assistant" or "clip"
    source: str       # the path as the input gave it
    path: Path
    digest: str       # sha1 of the file's bytes
    seconds: float
    kinds: list[str]  # cache kinds this audio needs: codes, features, speaker


@dataclass
class SamplePlan:
    line: int
    sample: dict
    audios: list[AudioRef]                  # one per <|audio|>, in order
    clip: AudioRef | None = None            # voice.clip
    voice_vector: np.ndarray | None = None  # voice.speaker / voice.vector, resolved


@dataclass
class InputReport:
    file: str
    samples: int = 0
    prepared: int = 0
    problems: list[Problem] = field(default_factory=list)
    seconds_user: float = 0.0
    seconds_assistant: float = 0.0

    @property
    def skipped(self) -> int:
        return self.samples - self.prepared


@dataclass
class PrepareReport:
    output: Path
    inputs: list[InputReport] = field(default_factory=list)
    computed: int = 0  # audio files run through the models in this run
    cached: int = 0    # audio files whose arrays were all in the cache already
    codec_type: str = ""
    frame_rate: float = 0.0

    @property
    def samples(self) -> int:
        return sum(r.samples for r in self.inputs)

    @property
    def prepared(self) -> int:
        return sum(r.prepared for r in self.inputs)

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.inputs)

    @property
    def problems(self) -> list[tuple[str, Problem]]:
        return [(r.file, p) for r in self.inputs for p in r.problems]

    def summary(self) -> str:
        lines = [f"prepared {self.prepared} of {self.samples} sample(s) from {len(self.inputs)} file(s) "
                 f"into {self.output}; audio files: {self.computed} computed, {self.cached} from the cache"]
        for r in self.inputs:
            errors = f", {r.skipped} skipped (see {self.output / (Path(r.file).stem + '.errors.jsonl')})" \
                if r.skipped else ""
            lines.append(f"  {r.file}: {r.prepared}/{r.samples} prepared{errors}; "
                         f"{r.seconds_user:.1f} s user, {r.seconds_assistant:.1f} s assistant audio")
        return "\n".join(lines)


class _VoiceTable:
    """``voice.speaker`` names -> vectors, from a .sqlite voice library or a spk2embeds .pt."""

    def __init__(self, path: Path | None):
        self.path, self.table, self.library = path, None, None
        if path is None:
            return
        if path.suffix == ".pt":
            import torch

            try:
                table = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as e:  # torch raises several types for foreign pickles
                raise ConfigError(f"'voices': cannot read voice table {path}: {e}") from None
            if not isinstance(table, dict):
                raise ConfigError(f"'voices': {path}: expected a dict name -> 192-d tensor, got "
                                  f"{type(table).__name__}")
            self.table = {str(k): v for k, v in table.items()}
        else:
            from qinyu.voice.library import VoiceError, VoiceLibrary

            try:
                self.library = VoiceLibrary(path)
            except VoiceError as e:
                raise ConfigError(f"'voices': {e}") from None

    def get(self, name: str) -> np.ndarray:
        from qinyu.voice.library import VoiceError, check_vector

        if self.path is None:
            raise VoiceError(f"no voice table is configured (set 'voices' in the prepare config) to look up {name!r}")
        if self.table is not None:
            if name not in self.table:
                raise VoiceError(f"no voice named {name!r} in {self.path}")
            return check_vector(np.asarray(self.table[name], dtype=np.float32))
        return check_vector(self.library.get(name).vector)


def _load_vector_file(path: Path) -> np.ndarray:
    from qinyu.voice.library import VoiceError, check_vector

    try:
        if path.suffix == ".pt":
            import torch

            value = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            value = np.load(path, allow_pickle=False)
        return check_vector(np.asarray(value, dtype=np.float32))
    except VoiceError as e:
        raise VoiceError(f"{path}: {e}") from None
    except Exception as e:  # numpy and torch raise several types for foreign files
        raise VoiceError(f"cannot read a speaker vector from {path}: {e}") from None


def _plan(sample: dict, line: int, base: Path, has_encoder: bool, voices: _VoiceTable,
          digests: dict[Path, str]) -> SamplePlan:
    """The arrays a checked sample needs. Raises _SampleError for problems the schema
    check cannot see (voice table, vector files, clip without an encoder)."""
    import soundfile as sf

    from qinyu.voice.library import VoiceError

    def ref(field_name, role, rel, kinds) -> AudioRef:
        path = (base / rel).resolve()
        if path not in digests:  # the same file in several samples is read once
            digests[path] = _sha1_file(path)
        info = sf.info(str(path))
        return AudioRef(field_name, role, rel, path, digests[path], info.frames / info.samplerate, kinds)

    # the voice first: its problems need no audio read
    voice = sample.get("voice") or {}
    vector = None
    try:
        if "speaker" in voice:
            vector = voices.get(str(voice["speaker"]))
        elif "vector" in voice:
            vector = _load_vector_file(base / voice["vector"])
    except VoiceError as e:
        raise _SampleError(Problem(line, f"voice.{next(iter(voice))}", str(e))) from None
    if "clip" in voice and not has_encoder:
        raise _SampleError(Problem(line, "voice.clip", "a voice clip needs a speaker encoder "
                                                       "(set 'speaker_encoder' in the prepare config)"))

    default_voice = not voice and has_encoder
    audios = []
    for j, (role, rel) in enumerate(zip(audio_roles(sample["messages"]), sample.get("audios", []))):
        if role == "user":
            kinds = ["features", "speaker"] if has_encoder else ["features"]
        else:
            kinds = ["codes", "speaker"] if default_voice else ["codes"]
        audios.append(ref(f"audios[{j}]", role, rel, kinds))
    clip = ref("voice.clip", "clip", voice["clip"], ["speaker"]) if "clip" in voice else None
    return SamplePlan(line, sample, audios, clip, vector)


class _SampleError(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------
def prepare(config, base=None) -> PrepareReport:
    """Prepare every input file of ``config`` (a YAML path, a dict or a PrepareConfig);
    see the module docstring. Raises ConfigError for a config that cannot run."""
    cfg = load_config(config, base)
    spec = {"codec": str(cfg.codec), "cmvn": _str_or_none(cfg.cmvn),
            "speaker_encoder": _str_or_none(cfg.speaker_encoder), "speaker_dtype": cfg.speaker_dtype}
    try:  # fail on a bad model here, once, with its own message, rather than in every worker
        models = _load_models(spec)
    except Exception as e:
        raise ConfigError(f"cannot load the models of the prepare config: {e}") from None
    report = PrepareReport(cfg.output, codec_type=models["codec"].codec_type,
                           frame_rate=float(models["codec"].frame_rate))
    has_encoder = models["speaker"] is not None
    del models  # the workers load their own
    voices = _VoiceTable(cfg.voices)
    fingerprints = {"codes": _fingerprint(cfg.codec, label=KIND_VERSIONS["codes"]),
                    "features": _fingerprint(cfg.cmvn, label=KIND_VERSIONS["features"]),
                    # vectors made under bf16 are cached apart from fp32 ones
                    "speaker": _fingerprint(cfg.speaker_encoder, label=KIND_VERSIONS["speaker"] +
                                            ("" if cfg.speaker_dtype == "fp32" else f" {cfg.speaker_dtype}"))}

    out = cfg.output
    for kind in ("codes", "features", "speaker", "voice"):
        (out / "cache" / kind).mkdir(parents=True, exist_ok=True)
    # temporary files of an interrupted run: never complete, never referenced
    for stale in [*out.glob("*.tmp-*"), *(out / "cache").glob("*/*.tmp-*")]:
        stale.unlink(missing_ok=True)

    digests: dict[Path, str] = {}
    for path in cfg.inputs:
        report.inputs.append(_prepare_file(path, cfg, spec, fingerprints, has_encoder, voices, digests, report))

    manifest = {
        "config": cfg.to_json(),
        "codec": {"type": report.codec_type, "frame_rate": report.frame_rate},
        "inputs": [{"file": r.file, "samples": r.samples, "prepared": r.prepared, "skipped": r.skipped,
                    "prepared_file": Path(r.file).stem + ".prepared.jsonl",
                    "errors_file": Path(r.file).stem + ".errors.jsonl",
                    "seconds": {"user": round(r.seconds_user, 3), "assistant": round(r.seconds_assistant, 3)}}
                   for r in report.inputs],
        "samples": report.samples, "prepared": report.prepared, "skipped": report.skipped,
        "seconds": {"user": round(sum(r.seconds_user for r in report.inputs), 3),
                    "assistant": round(sum(r.seconds_assistant for r in report.inputs), 3)},
    }
    _write_text(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return report


def _prepare_file(path: Path, cfg: PrepareConfig, spec: dict, fingerprints: dict, has_encoder: bool,
                  voices: _VoiceTable, digests: dict, report: PrepareReport) -> InputReport:
    out = cfg.output
    rep = InputReport(str(path))

    # 1. check every line and plan the arrays of the good samples
    plans: list[SamplePlan] = []
    for line, obj in read_jsonl(path):
        rep.samples += 1
        if isinstance(obj, Problem):
            rep.problems.append(obj)
            continue
        problems = check_sample(obj, line, path.parent, check_files=True)
        if problems:
            rep.problems += problems
            continue
        try:
            plans.append(_plan(obj, line, path.parent, has_encoder, voices, digests))
        except _SampleError as e:
            rep.problems.append(e.problem)
    if rep.samples == 0:
        rep.problems.append(Problem(0, "(file)", "no samples"))

    def rel(kind, digest) -> str:
        key = hashlib.sha1(f"{fingerprints[kind]}\0{digest}".encode()).hexdigest()
        return f"cache/{kind}/{key}.npy"

    # 2. one job per distinct audio content, for the entries not in the cache yet
    needed: dict[str, tuple[Path, dict[str, str]]] = {}
    for plan in plans:
        for a in plan.audios + ([plan.clip] if plan.clip else []):
            outputs = needed.setdefault(a.digest, (a.path, {}))[1]
            for kind in a.kinds:
                outputs[kind] = rel(kind, a.digest)
    jobs = []
    for digest, (audio_path, outputs) in needed.items():
        missing = [(kind, str(out / r)) for kind, r in outputs.items() if not (out / r).is_file()]
        if missing:
            jobs.append((digest, str(audio_path), missing))
        else:
            report.cached += 1
    failed = _run_jobs(jobs, cfg.workers, spec, desc=path.name)
    report.computed += len(jobs)

    # 3. assemble the prepared lines (in input order) from the cache
    rows = []
    for plan in plans:
        bad = [Problem(plan.line, a.field, failed[a.digest])
               for a in plan.audios + ([plan.clip] if plan.clip else []) if a.digest in failed]
        if bad:
            rep.problems += bad
            continue
        audio = []
        for a in plan.audios:
            if a.role == "user":
                features = rel("features", a.digest)
                audio.append({"role": "user", "source": a.source, "features": features,
                              "frames": _frames(out / features, axis=0),
                              "speaker": rel("speaker", a.digest) if has_encoder else None})
                rep.seconds_user += a.seconds
            else:
                codes = rel("codes", a.digest)
                audio.append({"role": "assistant", "source": a.source, "codes": codes,
                              "frames": _frames(out / codes, axis=1)})
                rep.seconds_assistant += a.seconds
        sample_id = plan.sample.get("id")
        row = {"id": sample_id if sample_id is not None else f"{path.name}:{plan.line}",
               "task": plan.sample.get("task", "chat"),
               "messages": plan.sample["messages"], "audio": audio,
               "voice": _voice(plan, out, lambda d: rel("speaker", d))}
        if "meta" in plan.sample:
            row["meta"] = plan.sample["meta"]
        rows.append(row)
    rep.prepared = len(rows)
    rep.problems.sort(key=lambda p: p.line)

    # 4. the outputs of this file, each written whole
    _write_text(out / f"{path.stem}.errors.jsonl",
                _jsonl({"file": str(path), "line": p.line, "field": p.field, "message": p.message}
                       for p in rep.problems))
    _write_text(out / f"{path.stem}.prepared.jsonl", _jsonl(rows))
    return rep


def _frames(path: Path, axis: int) -> int:
    # reading the header is enough: the frame count is the array's length along time
    return int(np.load(path, mmap_mode="r").shape[axis])


def _voice(plan: SamplePlan, out: Path, speaker_rel) -> str | None:
    """The sample's assistant voice vector, saved under cache/voice/; None when there is none."""
    if plan.voice_vector is not None:
        vector = plan.voice_vector
    elif plan.clip is not None:
        vector = np.load(out / speaker_rel(plan.clip.digest))
    else:
        speaking = [a for a in plan.audios if a.role == "assistant" and "speaker" in a.kinds]
        if not speaking:
            return None  # no speaker encoder, or no assistant speech to take the voice from
        # the reference's default voice: the mean of the assistant audios' CAM++ vectors
        vector = np.mean([np.load(out / speaker_rel(a.digest)) for a in speaking], axis=0)
    vector = np.ascontiguousarray(vector, dtype=np.float32)
    rel = f"cache/voice/{hashlib.sha1(vector.tobytes()).hexdigest()}.npy"
    if not (out / rel).is_file():
        _save_npy(out / rel, vector)
    return rel


def _run_jobs(jobs: list, workers: int, spec: dict, desc: str) -> dict[str, str]:
    """Run the jobs on a pool of ``workers`` spawned processes; -> {digest: error message}."""
    from tqdm import tqdm

    failed: dict[str, str] = {}
    if not jobs:
        return failed
    ctx = multiprocessing.get_context("spawn")  # fork would copy the parent's torch threads and state
    with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(spec,)) as pool, \
            tqdm(total=len(jobs), desc=desc, unit="audio", disable=None) as bar:
        for digest, error in pool.imap_unordered(_run_job, jobs):
            if error is not None:
                failed[digest] = error
            bar.update(1)
    return failed


def main_prepare(config_path: str) -> int:
    """``qinyu data prepare CONFIG``: 0 when every sample was prepared, 1 when some were
    skipped (listed in <output>/<stem>.errors.jsonl), 2 for a config that cannot run."""
    try:
        report = prepare(config_path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished items are cached; run the same command again to resume", file=sys.stderr)
        return 130
    print(report.summary())
    for file, p in report.problems[:10]:
        print(f"  skipped {Path(file).name} {p}")
    if len(report.problems) > 10:
        print(f"  ... and {len(report.problems) - 10} more problem(s) in the errors files")
    return 0 if not report.problems else 1
