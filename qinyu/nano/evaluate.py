"""``qinyu eval nano``: a checkpoint on the nano corpus's held-out split.

The model answers every held-out item (``heldout.jsonl``; what each tests and its
reference in ``heldout_meta.jsonl``) through the engine, in batches, greedily; then:

- **QA answer accuracy** (``answer_correct``): arithmetic and arithmetic follow-ups are
  right when the *last number* in the reply text equals the reference, numbers read
  from digits ("7") or English words ("seven", "twenty-three", "twenty three"); facts
  and greetings are right when the reply contains the reference word(s) as whole words
  (lowercase, hyphens as spaces, punctuation other than the apostrophe removed).
  Follow-ups keep the corpus's first answer as history; only the last turn is scored.
- **ASR CER**: the model's ASR prompt on every held-out user utterance against its
  transcript, normaliser ``uro-zh`` (lowercase, punctuation removed, every character a
  unit, spaces included), total errors over total reference characters.
- **Intelligibility** of the spoken QA answers, each also on the codec-reconstructed
  ground-truth answer (encode + decode with the checkpoint's codec) as the upper bound:
  (a) pocketsphinx forced choice (``ForcedChoice``): a JSGF grammar of the sentence the
  speech should say (the reply's own text; for the ground truth, the reference answer)
  and up to nine other held-out answers; right when pocketsphinx picks that sentence;
  (b) CER of the model's own ASR of the speech against that same sentence (``uro-zh``).
- **Role-play voice match**: the checkpoint's speaker encoder embeds the spoken line;
  cosine similarity to the target voice (the mean embedding of its reference clips,
  ``voices/NAME/*.wav`` of the corpus, each through the checkpoint's codec: the model can
  only speak through it, and raw targets judge the codec's channel along with the voice)
  and nearest-voice accuracy over the eight role-play voices; also on the
  codec-reconstructed ground truth.
- **Singing pitch**: the target notes rendered as an F0 contour (10 ms frames, the note's
  frequency while it sounds, 0 between notes) against Praat's F0 of the sung answer:
  normalised contour MSE and DTW and note accuracy within a semitone
  (``qinyu.eval.metrics.pitch``: ``PITCH_METHOD``); also on the codec-reconstructed
  ground truth.

A metric that cannot be computed (no codec, no speaker encoder, pocketsphinx missing,
every item failed) is reported as "not computed: <reason>", never as a number; items
that fail are counted in ``failed`` and listed. Voice vectors (``<|speaker|>``) follow
training: with a speaker encoder in the checkpoint every prompt gets the training voice
line and a vector (QA and singing: the mean embedding of train clips of the voice that
answers; role-play: the checkpoint's text-to-timbre applied to the held-out
description, or, without one, the target voice's own train clips, marked as an oracle
in the method); without one, no voice line and no vector.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .corpus import AUDIO_TAG, ROLEPLAY_VOICES, read_jsonl

KINDS = ("qa", "asr", "roleplay", "singing")
CER_NORMALISER = "uro-zh"
CER_AGGREGATE = "corpus"
FORCED_CHOICE_DISTRACTORS = 9
CENTROID_CLIPS = 8
HOP_S = 0.01
UPPER = " — upper bound: codec-reconstructed ground truth"
TARGETS = {  # metric key -> (threshold, "higher" | "lower"): the acceptance targets of the nano issue
    "qa_accuracy": (90.0, "higher"), "asr_cer": (10.0, "lower"), "nearest_voice": (80.0, "higher"),
    "note_accuracy": (70.0, "higher"),
}
INTELLIGIBILITY_GAP = 10.0  # generated within this many points of the codec upper bound


class NanoEvalError(ValueError):
    """The evaluation cannot start (missing corpus or checkpoint files)."""


# ======================================================================================
# QA answers
# ======================================================================================
_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_UNIT_VALUES = {w: i for i, w in enumerate(_UNITS)}


def answer_tokens(text: str) -> list[str]:
    """Lowercase words: hyphens become spaces, characters other than a-z, 0-9 and the
    apostrophe become spaces."""
    text = str(text).lower().replace("-", " ")
    return re.sub(r"[^a-z0-9']+", " ", text).split()


def numbers_in(text: str) -> list[int]:
    """The whole numbers said in ``text``, in order: digit runs, and number words from
    zero to ninety-nine ("twenty three" and "twenty-three" are one number)."""
    tokens = answer_tokens(text)
    out, i = [], 0
    while i < len(tokens):
        t = tokens[i]
        if t.isdigit():
            out.append(int(t))
        elif t in _TENS:
            value = _TENS[t]
            if i + 1 < len(tokens) and 1 <= _UNIT_VALUES.get(tokens[i + 1], 0) <= 9:
                value += _UNIT_VALUES[tokens[i + 1]]
                i += 1
            out.append(value)
        elif t in _UNIT_VALUES:
            out.append(_UNIT_VALUES[t])
        i += 1
    return out


def answer_correct(reply: str, reference: dict) -> bool:
    """Whether a reply text gives the reference answer (see the module docstring).

    ``reference`` holds ``number`` (arithmetic: the last number said must equal it) or
    ``accept`` (a list of phrases; one must occur as whole words)."""
    if reference.get("number") is not None:
        found = numbers_in(reply)
        return bool(found) and found[-1] == int(reference["number"])
    words = answer_tokens(reply)
    for phrase in reference.get("accept") or [reference["answer"]]:
        want = answer_tokens(phrase)
        if want and any(words[i:i + len(want)] == want for i in range(len(words) - len(want) + 1)):
            return True
    return False


# ======================================================================================
# report rows
# ======================================================================================
@dataclass
class Row:
    key: str            # stable name, e.g. "qa_accuracy"
    metric: str         # what the report calls it
    value: float | None
    n: int              # items scored
    failed: int         # items that could not be scored
    method: str
    unit: str = ""
    reason: str | None = None  # why there is no value
    upper_bound: bool = False
    details: str = ""   # the full method, printed once under the table

    def cell(self) -> str:
        if self.value is None:
            return f"not computed: {self.reason}"
        if self.unit == "%":
            return f"{self.value:.1f} %"
        return f"{self.value:.3f}"

    def as_dict(self) -> dict:
        return asdict(self)


def _row(key, metric, values: list, failures: list, method: str, unit: str = "", scale: float = 1.0,
         upper_bound: bool = False, reason: str | None = None, mean=None) -> Row:
    """A row from per-item values (None or an exception for a failed item)."""
    good = [v for v in values if v is not None]
    failed = len(values) - len(good)
    if reason:
        return Row(key, metric, None, 0, len(values), method, unit, reason, upper_bound)
    if not good:
        why = failures[0][1] if failures else "no held-out items of this kind"
        return Row(key, metric, None, 0, failed, method, unit,
                   f"every item failed (e.g. {why})" if failures else why, upper_bound)
    value = mean(good) if mean else float(np.mean(good)) * scale
    return Row(key, metric, value, len(good), failed, method, unit, None, upper_bound)


# ======================================================================================
# inputs
# ======================================================================================
@dataclass
class HeldOut:
    id: str
    kind: str
    sample: dict
    meta: dict

    @property
    def reference(self) -> dict:
        return self.meta["reference"]


def load_heldout(corpus, limit: int | None = None) -> list[HeldOut]:
    """The held-out items with their meta; ``limit``: the first N of each kind."""
    from ..data.schema import check_file

    corpus = Path(corpus)
    for name in ("heldout.jsonl", "heldout_meta.jsonl", "voices/voices.json"):
        if not (corpus / name).is_file():
            raise NanoEvalError(f"{corpus / name} not found: build the corpus with `qinyu data nano-corpus --out "
                                f"{corpus}` (same seed and scale as the training corpus)")
    count, problems = check_file(corpus / "heldout.jsonl")
    if problems:
        raise NanoEvalError(f"{corpus / 'heldout.jsonl'}: {len(problems)} problem(s), e.g. {problems[0]}")
    samples = {s["id"]: s for s in read_jsonl(corpus / "heldout.jsonl")}
    items, per_kind = [], {}
    for m in read_jsonl(corpus / "heldout_meta.jsonl"):
        if m["id"] not in samples:
            raise NanoEvalError(f"{corpus / 'heldout_meta.jsonl'}: item {m['id']!r} is not in heldout.jsonl")
        if limit is not None and per_kind.get(m["kind"], 0) >= limit:
            continue
        per_kind[m["kind"]] = per_kind.get(m["kind"], 0) + 1
        items.append(HeldOut(m["id"], m["kind"], samples[m["id"]], m))
    return items


@dataclass
class Output:
    """What the model said: text, and speech (None without a codec)."""

    text: str
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    finished: str = ""
    steps: int = 0


# ======================================================================================
# tools: forced choice, voices
# ======================================================================================
class ForcedChoice:
    """pocketsphinx (its bundled US English model) choosing among candidate sentences
    with a JSGF grammar; batch CMN, so each utterance is normalised on its own."""

    name = "pocketsphinx forced choice"

    def __init__(self):
        from pocketsphinx import Decoder  # the bench extra: pip install "qinyu[bench]"

        self.decoder = Decoder(samprate=16000, cmn="batch", loglevel="FATAL")

    @staticmethod
    def normalise(text: str) -> str:
        """What a grammar alternative is: lowercase words, digits spelled out."""
        from ..data.synth.sources import number_words

        words = []
        for t in answer_tokens(text):
            words += number_words(int(t)).replace("-", " ").split() if t.isdigit() and int(t) < 1000 else [t]
        return " ".join(w.strip("'") for w in words if w.strip("'"))

    def unknown_words(self, sentence: str) -> list[str]:
        return [w for w in sentence.split() if self.decoder.lookup_word(w) is None]

    def choose(self, wav: np.ndarray, sample_rate: int, candidates: list[str]) -> str:
        from ..audio.io import resample

        grammar = "#JSGF V1.0;\ngrammar candidates;\npublic <s> = " + " | ".join(candidates) + " ;\n"
        self.decoder.add_jsgf_string("candidates", grammar)  # replaces the previous item's grammar
        self.decoder.activate_search("candidates")
        pcm = (np.clip(resample(np.asarray(wav, np.float32), sample_rate, 16000), -1, 1) * 32767).astype(np.int16)
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


def load_forced_choice():
    """(ForcedChoice, None) or (None, why it is missing)."""
    try:
        return ForcedChoice(), None
    except ImportError:
        return None, "pocketsphinx is not installed (pip install 'qinyu[bench]')"


def target_contour(notes: list, num_frames: int | None = None, hop_s: float = HOP_S) -> np.ndarray:
    """The notes ``[[midi, start_s, duration_s, syllable], ...]`` as F0 in Hz per hop
    (frame k centred at (k + 0.5) hop), 0 where no note sounds."""
    from ..data.synth.svs import midi_to_hz

    end = max((n[1] + n[2] for n in notes), default=0.0)
    frames = num_frames if num_frames is not None else int(math.ceil(end / hop_s))
    t = (np.arange(frames) + 0.5) * hop_s
    f0 = np.zeros(frames)
    for pitch, start, duration, *_ in notes:
        f0[(t >= start) & (t < start + duration)] = midi_to_hz(pitch)
    return f0


# ======================================================================================
# scoring (pure functions of outputs: the ground truth scored as "generated" gives the
# upper-bound numbers)
# ======================================================================================
def score_qa(items: list[HeldOut], outputs: dict) -> list[Row]:
    method = ("last number said (digits or words) = reference for arithmetic; reference word(s) as whole words for "
              "facts and greetings; lowercase, hyphens as spaces, punctuation removed")
    qa = [it for it in items if it.kind == "qa"]
    rows = []
    groups = [("qa_accuracy", "QA answer accuracy", qa)]
    for sub in sorted({it.meta.get("sub") for it in qa}):
        groups.append((f"qa_accuracy_{sub}", f"QA answer accuracy: {sub}", [it for it in qa if it.meta.get("sub") == sub]))
    for key, name, group in groups:
        values, failures = [], []
        for it in group:
            out = outputs.get(it.id)
            if isinstance(out, Output):
                values.append(1.0 if answer_correct(out.text, it.reference) else 0.0)
            else:
                values.append(None)
                failures.append((it.id, _why(out)))
        rows.append(_row(key, name, values, failures, method if key == "qa_accuracy" else "as above", "%", 100.0))
    return rows


def cer_row(key: str, metric: str, pairs: list, method: str, upper_bound: bool = False,
            reason: str | None = None) -> Row:
    """CER (%) over (reference, hypothesis | exception) pairs; failed pairs are counted."""
    from ..eval.metrics.wer import error_rate

    good = [(r, h) for r, h in pairs if isinstance(h, str)]
    failures = [("", _why(h)) for r, h in pairs if not isinstance(h, str)]
    if reason:
        return Row(key, metric, None, 0, len(pairs), method, "%", reason, upper_bound)
    if not good:
        why = f"every item failed (e.g. {failures[0][1]})" if failures else "no items"
        return Row(key, metric, None, 0, len(failures), method, "%", why, upper_bound)
    rate = error_rate([r for r, _ in good], [h for _, h in good], CER_NORMALISER, aggregate=CER_AGGREGATE)
    return Row(key, metric, 100.0 * rate.value, len(good), len(failures), method, "%", None, upper_bound)


def forced_choice_row(key: str, metric: str, cases: list, chooser, pool: list[str], upper_bound: bool = False,
                      reason: str | None = None, details: dict | None = None) -> Row:
    """Forced choice accuracy (%) over (item id, audio (wav, sr) | exception, target text) cases.

    Candidates: the target and up to ``FORCED_CHOICE_DISTRACTORS`` other sentences of
    ``pool`` (known words only), drawn by a generator seeded with the item id, so the
    generated speech and the ground truth of one item face the same distractors."""
    method = (f"{ForcedChoice.name} (en-us model, batch CMN): the sentence the speech should say among it and up "
              f"to {FORCED_CHOICE_DISTRACTORS} other held-out answers")
    if reason or chooser is None:
        return Row(key, metric, None, 0, len(cases), method, "%", reason or "no recogniser", upper_bound)
    known = sorted({s for s in (chooser.normalise(p) for p in pool) if s and not chooser.unknown_words(s)})
    values, failures = [], []
    for item_id, audio, target in cases:
        try:
            if not isinstance(audio, tuple):
                raise audio if isinstance(audio, Exception) else ValueError("no speech")
            if audio[0] is None or len(audio[0]) == 0:
                raise ValueError("no speech was generated")
            sentence = chooser.normalise(target or "")
            if not sentence:
                raise ValueError("the reply has no text to check the speech against")
            unknown = chooser.unknown_words(sentence)
            if unknown:
                raise ValueError(f"word(s) {unknown} not in pocketsphinx's dictionary")
            others = [s for s in known if s != sentence]
            random.Random(item_id).shuffle(others)
            candidates = [sentence] + others[:FORCED_CHOICE_DISTRACTORS]
            heard = chooser.choose(audio[0], audio[1], sorted(candidates))
            values.append(1.0 if heard == sentence else 0.0)
            if details is not None:
                details[item_id] = heard
        except Exception as e:  # noqa: BLE001 - the item fails with its reason; the others are scored
            values.append(None)
            failures.append((item_id, _why(e)))
    return _row(key, metric, values, failures, method, "%", 100.0, upper_bound)


def voice_rows(cases: list, embed, targets: dict, prefix: str, upper_bound: bool = False,
               reason: str | None = None, method_note: str = "", details: dict | None = None) -> list[Row]:
    """Cosine similarity to the target voice and nearest-voice accuracy (%) over
    (item id, audio | exception, target voice) cases; ``targets``: voice -> embedding."""
    from ..eval.metrics.speaker import cosine

    names = sorted(targets)
    method = (f"speaker encoder of the checkpoint; target = mean embedding of the voice's reference clips through "
              f"the checkpoint's codec; nearest "
              f"of {len(names)} voices" + (f"; {method_note}" if method_note else ""))
    what = UPPER if upper_bound else ""
    if reason:
        return [Row(f"{prefix}similarity", f"role-play voice similarity (cosine){what}", None, 0, len(cases), method,
                    "", reason, upper_bound),
                Row(f"{prefix}nearest_voice", f"role-play nearest-voice accuracy{what}", None, 0, len(cases), method,
                    "%", reason, upper_bound)]
    sims, hits, failures = [], [], []
    for item_id, audio, voice in cases:
        try:
            if not isinstance(audio, tuple):
                raise audio if isinstance(audio, Exception) else ValueError("no speech")
            if audio[0] is None or len(audio[0]) < 0.1 * audio[1]:
                raise ValueError("no speech (or under 0.1 s) was generated")
            if voice not in targets:
                raise ValueError(f"no reference clips for voice {voice!r}")
            e = embed(audio[0], audio[1])
            scores = {v: cosine(e, targets[v]) for v in names}
            sims.append(scores[voice])
            nearest = max(names, key=lambda v: scores[v])
            hits.append(1.0 if nearest == voice else 0.0)
            if details is not None:
                details[item_id] = {"similarity": scores[voice], "nearest": nearest}
        except Exception as e:  # noqa: BLE001
            sims.append(None)
            hits.append(None)
            failures.append((item_id, _why(e)))
    return [_row(f"{prefix}similarity", f"role-play voice similarity (cosine){what}", sims, failures, method, "",
                 upper_bound=upper_bound),
            _row(f"{prefix}nearest_voice", f"role-play nearest-voice accuracy{what}", hits, failures, method, "%",
                 100.0, upper_bound)]


def pitch_rows(cases: list, prefix: str, upper_bound: bool = False, reason: str | None = None,
               contours: dict | None = None) -> list[Row]:
    """Contour MSE, DTW and note accuracy (%) over (item id, audio | exception, notes) cases."""
    from ..eval.metrics.pitch import PITCH_METHOD, contour_dtw, contour_mse, f0_contour, note_accuracy

    what = UPPER if upper_bound else ""
    method = "Praat F0 of the singing vs the target notes as an F0 contour (10 ms); normalised log-F0, see Methods"
    details = "Singing pitch metrics (the target: the notes as an F0 contour, 10 ms frames, 0 between notes). " + \
        PITCH_METHOD
    names = [("contour_mse", f"singing pitch-contour MSE{what}", ""), ("contour_dtw", f"singing pitch-contour DTW{what}", ""),
             ("note_accuracy", f"singing note accuracy (within 1 semitone){what}", "%")]
    if reason:
        return [Row(prefix + k, m, None, 0, len(cases), method, u, reason, upper_bound, details)
                for k, m, u in names]
    values = {k: [] for k, _, _ in names}
    failures = []
    for item_id, audio, notes in cases:
        try:
            if not isinstance(audio, tuple):
                raise audio if isinstance(audio, Exception) else ValueError("no singing")
            if audio[0] is None or len(audio[0]) < 0.1 * audio[1]:
                raise ValueError("no singing (or under 0.1 s) was generated")
            f0 = f0_contour(audio[0], audio[1], HOP_S)
            target = target_contour(notes)
            got = (contour_mse(target, f0), contour_dtw(target, f0), note_accuracy(target, f0))
            for (k, _, _), v in zip(names, got):
                values[k].append(v)
            if contours is not None:
                contours[item_id] = (target, f0)
        except Exception as e:  # noqa: BLE001
            for k in values:
                values[k].append(None)
            failures.append((item_id, _why(e)))
    return [replace(_row(prefix + k, m, values[k], failures, method, u, 100.0 if u == "%" else 1.0, upper_bound),
                    details=details) for k, m, u in names]


def _why(e) -> str:
    if isinstance(e, Exception):
        return f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
    return "no output" if e is None else str(e)


# ======================================================================================
# the model
# ======================================================================================
class NanoModel:
    """A checkpoint answering held-out items: prompts rendered as training renders
    them (the voice line and a voice vector when there is a speaker encoder)."""

    def __init__(self, model_dir, corpus, timbre=None, max_steps: int = 1536, device: str = "auto",
                 batch: int = 8):
        from ..eval.runners.base import SpeechModel

        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"

        self.model_dir, self.corpus = Path(model_dir), Path(corpus)
        if not (self.model_dir / "config.json").is_file():
            raise NanoEvalError(f"--model {self.model_dir}: not a checkpoint folder (no config.json)")
        self.speech = SpeechModel(model_dir, max_steps=max_steps, device=device)
        self.codec, self.encoder = self.speech.codec, self.speech.speaker_encoder
        self.max_steps, self.batch = max_steps, batch
        self.timbre, self.timbre_path = None, None
        path = Path(timbre) if timbre else self.model_dir / "timbre"
        if timbre or (path / "timbre.json").is_file():  # a named folder must load; the default may be absent
            from ..voice.timbre import TextToTimbre

            self.timbre, self.timbre_path = TextToTimbre.load(path), path
        self._centroids: dict[str, np.ndarray] = {}
        self._train_clips: dict | None = None

    @property
    def frame_rate(self) -> float:
        return float(self.codec.frame_rate) if self.codec is not None else 12.5

    # -- voices ----------------------------------------------------------------------
    def embed(self, wav, sr) -> np.ndarray:
        return self.encoder.embed(wav, sr)

    def train_clips(self) -> dict:
        """(task, voice) -> the assistant audio of the train samples spoken or sung in it."""
        if self._train_clips is None:
            self._train_clips = {}
            path = self.corpus / "train.jsonl"
            for s in (read_jsonl(path) if path.is_file() else []):
                v = s.get("meta", {}).get("voice")
                if v and s["task"] in ("chat", "roleplay", "singing") and s["audios"]:
                    self._train_clips.setdefault((s["task"], v), []).append(s["audios"][-1])
        return self._train_clips

    def voice_vector(self, task: str, voice: str) -> np.ndarray:
        """The checkpoint's own vector of ``voice`` (``voices/<voice>.npy``: what training
        conditioned on) when it ships one, else the mean embedding of up to
        ``CENTROID_CLIPS`` train clips of ``voice`` in ``task``, else of its reference clips."""
        from ..audio.io import load_audio

        key = f"{task}:{voice}"
        shipped = self.model_dir / "voices" / f"{voice}.npy"
        if key not in self._centroids and shipped.is_file():
            self._centroids[key] = np.load(shipped).astype(np.float32)
        if key not in self._centroids:
            clips = self.train_clips().get((task, voice), [])[:CENTROID_CLIPS] or reference_clips(self.corpus, voice)
            if not clips:
                raise ValueError(f"no clips of voice {voice!r} in the corpus")
            self._centroids[key] = np.mean([self.embed(*load_audio(self.corpus / c)) for c in clips], axis=0)
        return self._centroids[key]

    # -- prompts ---------------------------------------------------------------------
    def request(self, item: HeldOut, method_notes: set):
        from ..engine.session import Persona, Turn
        from ..layout.chat import VOICE_LINE

        sample = item.sample
        messages = sample["messages"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else None
        body = messages[1:] if system is not None else messages
        if body[-1]["role"] != "assistant" or len(body) < 2 or body[-2]["role"] != "user":
            raise ValueError("a held-out sample must end with a user turn and the assistant's reference answer")
        voice = None
        with_persona = item.kind != "asr"
        if self.encoder is not None and with_persona:
            if item.kind == "roleplay" and self.timbre is not None:
                voice = np.asarray(self.timbre.generate(item.reference["description"]), np.float32)
                method_notes.add(f"role-play voice vector: text-to-timbre ({self.timbre_path}) of the held-out "
                                 f"description")
            elif item.kind == "roleplay":
                voice = self.voice_vector("roleplay", item.reference["voice"])
                method_notes.add("role-play voice vector: the target voice's own clips (oracle; the checkpoint has no "
                                 "text-to-timbre)")
            else:
                voice = self.voice_vector("chat" if item.kind == "qa" else "singing", sample["meta"]["voice"])
        if voice is not None:  # as training: the voice line appended to the system prompt (or alone)
            persona = Persona(system=(system + "\n" if system else "") + VOICE_LINE, voice=voice)
        else:
            persona = Persona(system=system or "")  # "": no system message
        session = self.speech.session(persona)
        audios = iter(sample["audios"])
        turns = []
        for m in body[:-1]:
            if m["role"] == "user":
                if AUDIO_TAG in m["content"]:
                    prompt = None if m["content"].strip() == AUDIO_TAG else m["content"]
                    turns.append(self.speech.audio_turn(session, self.corpus / next(audios), prompt=prompt))
                else:
                    turns.append(session.user_turn(text=m["content"]))
            else:
                turns.append(Turn("assistant", m["content"].replace(AUDIO_TAG, "")))
        session.history = turns[:-1]
        request = session.request(turns[-1], with_persona=with_persona)
        request.params = replace(request.params, max_steps=self.budget(item, len(request.input_ids)))
        return request

    def budget(self, item: HeldOut, prompt_len: int) -> int:
        """Decode steps: twice the reference's frames plus room for its text, at most
        ``max_steps`` and what the context leaves."""
        import soundfile as sf

        if item.kind == "asr":
            steps = 4 * len(item.reference["text"]) + 32
        else:
            info = sf.info(str(self.corpus / item.sample["audios"][-1]))
            frames = info.frames / info.samplerate * self.frame_rate
            steps = int(2 * frames + 2 * len(item.sample["messages"][-1]["content"]) + 64)
        context = self.speech.model.config.max_positions or (1 << 30)
        return max(1, min(steps, self.max_steps, context - prompt_len - 1))

    # -- generation ------------------------------------------------------------------
    def answer(self, items: list[HeldOut], progress: bool = True, method_notes: set | None = None) -> dict:
        """id -> Output, or the exception that made the item fail."""
        from tqdm import tqdm

        notes = method_notes if method_notes is not None else set()
        results: dict = {}
        bar = tqdm(total=len(items), desc="nano eval: generate", unit="item", disable=not progress, file=sys.stderr)
        for start in range(0, len(items), self.batch):
            chunk = items[start:start + self.batch]
            requests, keys = [], []
            for it in chunk:
                try:
                    requests.append(self.request(it, notes))
                    keys.append(it.id)
                except Exception as e:  # noqa: BLE001 - this item fails; the batch goes on
                    results[it.id] = e
            for key, reply in zip(keys, self.speech.generate(requests)):
                results[key] = reply if isinstance(reply, Exception) else Output(
                    reply.text.strip(), reply.audio, reply.sample_rate, reply.finished, reply.steps)
            bar.update(len(chunk))
        bar.close()
        return results

    def transcribe(self, audios: list) -> list:
        """The model's ASR prompt on (wav, sr) pairs, batched; each reply gets 40 steps per
        second of speech (+ 32), at most ``max_steps``. An exception passes through."""
        from ..layout import ASR_PROMPT

        out, requests, index = [None] * len(audios), [], []
        session = self.speech.session()
        for i, a in enumerate(audios):
            try:
                if not isinstance(a, tuple):
                    raise a if isinstance(a, Exception) else ValueError("no speech to transcribe")
                if a[0] is None or not len(a[0]):
                    raise ValueError("no speech to transcribe")
                request = session.request(session.user_turn(audio=a, prompt=ASR_PROMPT), with_history=False,
                                          with_persona=False)
                context = self.speech.model.config.max_positions or (1 << 30)
                steps = min(int(40 * len(a[0]) / a[1]) + 32, self.max_steps, context - len(request.input_ids) - 1)
                request.params = replace(request.params, max_steps=max(1, steps))
                requests.append(request)
                index.append(i)
            except Exception as e:  # noqa: BLE001
                out[i] = e
        for start in range(0, len(requests), self.batch):
            chunk = index[start:start + self.batch]
            for i, reply in zip(chunk, self.speech.generate(requests[start:start + self.batch])):
                out[i] = reply if isinstance(reply, Exception) else reply.text.strip()
        return out

    def reconstruct(self, path: Path):
        """The ground-truth audio through the checkpoint's codec (encode, decode)."""
        from ..audio.io import load_audio

        wav, sr = load_audio(path)
        return np.asarray(self.codec.decode(self.codec.encode(wav, sr)), np.float32), int(self.codec.output_sample_rate)


def reference_clips(corpus: Path, voice: str) -> list[str]:
    table = json.loads((Path(corpus) / "voices" / "voices.json").read_text(encoding="utf-8"))
    return list(table.get(voice, {}).get("clips", []))


def voice_targets(nm: "NanoModel", corpus: Path, voices=ROLEPLAY_VOICES) -> dict[str, np.ndarray]:
    """voice -> the mean speaker embedding of its reference clips passed through the checkpoint's
    codec (voices without clips are left out). Through the codec, as everything the model says is:
    against raw clips the codec-reconstructed ground truth was nearest its own voice in 52.1 % of
    lines, against these in 70.8 % (docs/nano.md)."""
    targets = {}
    for v in voices:
        clips = reference_clips(corpus, v)
        if clips:
            targets[v] = np.mean([nm.embed(*nm.reconstruct(Path(corpus) / c)) for c in clips], axis=0)
    return targets


# ======================================================================================
# the whole evaluation
# ======================================================================================
def evaluate_nano(model_dir, corpus_dir, report_path, limit: int | None = None, *, timbre=None,
                  max_steps: int = 1536, batch: int = 8, device: str = "auto", progress: bool = True,
                  save_audio: bool = False, model: NanoModel | None = None) -> dict:
    """Evaluate ``model_dir`` on the held-out split of ``corpus_dir``; write the markdown
    report to ``report_path`` (plus ``<stem>.json`` and plots in ``<stem>_files/``).
    ``limit``: the first N held-out items of each kind. Returns the report as a dict."""
    start = time.time()
    corpus, report_path = Path(corpus_dir), Path(report_path)
    items = load_heldout(corpus, limit)
    nm = model or NanoModel(model_dir, corpus, timbre=timbre, max_steps=max_steps, device=device, batch=batch)
    notes: set[str] = set()
    outputs = nm.answer(items, progress=progress, method_notes=notes)
    pool = [m["reference"]["reply"] for m in read_jsonl(corpus / "heldout_meta.jsonl") if m["kind"] == "qa"]
    rows, extras = score_all(items, outputs, nm, corpus, progress=progress, pool=pool)
    if notes:
        for r in rows:
            if r.key.startswith("voice_"):  # the generated speech's voice vector
                r.method += "; " + "; ".join(sorted(notes))
    files = report_path.parent / f"{report_path.stem}_files"
    files.mkdir(parents=True, exist_ok=True)
    plots = []
    loss = plot_losses(Path(model_dir), files / "loss.png")
    plots.append(("Loss curves", loss[0], loss[1]))
    pitch = plot_pitch(extras["contours"], extras["gt_contours"], files / "pitch.png")
    plots.append(("Singing: target vs generated pitch contours", pitch[0], pitch[1]))
    item_rows = []
    for it in items:
        out = outputs.get(it.id)
        row = {"id": it.id, "kind": it.kind, "sub": it.meta.get("sub"), "tests": it.meta.get("tests")}
        if isinstance(out, Output):
            row |= {"text": out.text, "finished": out.finished, "steps": out.steps,
                    "speech_s": None if out.audio is None else round(len(out.audio) / out.sample_rate, 2)}
            if it.kind == "qa":
                row["correct"] = answer_correct(out.text, it.reference)
            if save_audio and out.audio is not None and len(out.audio):
                from ..eval.runners.base import atomic_write_wav

                atomic_write_wav(files / "audio" / f"{it.id}.wav", out.audio, out.sample_rate)
        else:
            row["error"] = _why(out)
        for key in ("forced_choice", "gt_forced_choice", "self_asr", "voice", "gt_voice"):
            if it.id in extras.get(key, {}):
                row[key] = extras[key][it.id]
        row["reference"] = {k: v for k, v in it.reference.items() if k != "notes"}
        item_rows.append(row)
    (files / "items.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                                               for r in item_rows), encoding="utf-8")
    counts = {k: sum(1 for it in items if it.kind == k) for k in KINDS}
    report = {
        "model": str(model_dir), "corpus": str(corpus), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "limit": limit, "items": counts, "seconds": round(time.time() - start, 1),
        "codec": None if nm.codec is None else nm.codec.codec_type,
        "speaker_encoder": nm.encoder is not None, "timbre": None if nm.timbre_path is None else str(nm.timbre_path),
        "rows": [r.as_dict() for r in rows], "targets": target_lines(rows),
        "failures": [{"id": it.id, "reason": _why(outputs.get(it.id))} for it in items
                     if not isinstance(outputs.get(it.id), Output)],
        "plots": [{"title": t, "path": None if p is None else p.relative_to(report_path.parent).as_posix(),
                   "note": n} for t, p, n in plots],
        "items_file": (files / "items.jsonl").relative_to(report_path.parent).as_posix(),
    }
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.with_suffix(".json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
    report_path.write_text(render(report), encoding="utf-8")
    return report


def score_all(items: list[HeldOut], outputs: dict, nm, corpus: Path, progress: bool = False,
              pool: list[str] | None = None) -> tuple[list, dict]:
    """Every report row from the model's outputs (``nm`` supplies the codec, the speaker
    encoder and the model's own ASR). ``pool``: the sentences forced choice draws its
    distractors from (default: the reference answers of the QA items given)."""

    def log(stage):
        if progress:
            print(f"nano eval: {stage}", file=sys.stderr, flush=True)

    by_kind = {k: [it for it in items if it.kind == k] for k in KINDS}
    rows = score_qa(items, outputs)
    extras = {"contours": {}, "gt_contours": {}, "forced_choice": {}, "gt_forced_choice": {}, "self_asr": {},
              "voice": {}, "gt_voice": {}}

    # ASR
    asr_method = f"the model's ASR prompt; normaliser {CER_NORMALISER} v1, {CER_AGGREGATE} aggregate"
    pairs = [(it.reference["text"], outputs[it.id].text if isinstance(outputs.get(it.id), Output)
              else outputs.get(it.id) or ValueError("no output")) for it in by_kind["asr"]]
    rows.append(cer_row("asr_cer", "ASR CER", pairs, asr_method))

    def audio_of(out):
        if not isinstance(out, Output):
            return out if isinstance(out, Exception) else ValueError("no output")
        if out.audio is None:
            return ValueError("no speech")
        return (out.audio, out.sample_rate)

    def gt(it):
        try:
            return nm.reconstruct(corpus / it.sample["audios"][-1])
        except Exception as e:  # noqa: BLE001
            return e

    no_codec = None if nm.codec is not None else "the checkpoint names no codec (config 'codec'): it cannot speak"
    # intelligibility of the spoken QA answers
    qa = by_kind["qa"]
    texts = {it.id: (outputs[it.id].text if isinstance(outputs.get(it.id), Output) else "") for it in qa}
    gen_audio = {it.id: audio_of(outputs.get(it.id)) for it in qa}
    gt_audio = {it.id: gt(it) for it in qa} if not no_codec else {}
    chooser, missing = load_forced_choice()
    pool = pool if pool is not None else [it.reference["reply"] for it in qa]
    log("intelligibility (forced choice, own ASR) of the spoken answers and of the codec ground truth")
    rows.append(forced_choice_row("intelligibility_fc", "intelligibility: forced choice",
                                  [(it.id, gen_audio[it.id], texts[it.id]) for it in qa], chooser, pool,
                                  reason=no_codec or missing, details=extras["forced_choice"]))
    rows.append(forced_choice_row("gt_intelligibility_fc", "intelligibility: forced choice" + UPPER, [(it.id, gt_audio.get(it.id), it.reference["reply"]) for it in qa],
                                  chooser, pool, upper_bound=True, reason=no_codec or missing,
                                  details=extras["gt_forced_choice"]))
    self_method = f"the model's own ASR of the speech against its text; normaliser {CER_NORMALISER} v1, {CER_AGGREGATE}"
    if no_codec:
        rows.append(cer_row("intelligibility_cer", "intelligibility: own-ASR CER", [], self_method, reason=no_codec))
        rows.append(cer_row("gt_intelligibility_cer", "intelligibility: own-ASR CER" + UPPER, [], self_method,
                            upper_bound=True, reason=no_codec))
    else:
        heard = nm.transcribe([gen_audio[it.id] for it in qa])
        heard_gt = nm.transcribe([gt_audio[it.id] for it in qa])
        for it, h in zip(qa, heard):
            extras["self_asr"][it.id] = h if isinstance(h, str) else _why(h)
        own = [(texts[it.id], h) if texts[it.id] else ("", ValueError("the reply has no text"))
               for it, h in zip(qa, heard)]
        rows.append(cer_row("intelligibility_cer", "intelligibility: own-ASR CER", own, self_method))
        rows.append(cer_row("gt_intelligibility_cer", "intelligibility: own-ASR CER" + UPPER,
                            [(it.reference["reply"], h) for it, h in zip(qa, heard_gt)], self_method,
                            upper_bound=True))

    # role-play voices
    log("role-play voice match")
    rp = by_kind["roleplay"]
    no_encoder = None if nm.encoder is not None else ("the checkpoint has no speaker encoder (config "
                                                      "'speaker_encoder')")
    reason = no_codec or no_encoder
    targets = {}
    if not reason:
        try:
            targets = voice_targets(nm, corpus)
        except Exception as e:  # noqa: BLE001
            reason = f"the reference voices could not be embedded: {_why(e)}"
    rows += voice_rows([(it.id, audio_of(outputs.get(it.id)), it.reference["voice"]) for it in rp],
                       getattr(nm, "embed", None), targets, "voice_", reason=reason, details=extras["voice"])
    rows += voice_rows([(it.id, gt(it), it.reference["voice"]) for it in rp] if not reason else
                       [(it.id, None, it.reference["voice"]) for it in rp],
                       getattr(nm, "embed", None), targets, "gt_voice_", upper_bound=True, reason=reason,
                       details=extras["gt_voice"])

    # singing
    log("singing pitch")
    sing = by_kind["singing"]
    rows += pitch_rows([(it.id, audio_of(outputs.get(it.id)), it.reference["notes"]) for it in sing], "",
                       reason=no_codec, contours=extras["contours"])
    rows += pitch_rows([(it.id, gt(it) if not no_codec else None, it.reference["notes"]) for it in sing], "gt_",
                       upper_bound=True, reason=no_codec, contours=extras["gt_contours"])
    return rows, extras


# ======================================================================================
# the report
# ======================================================================================
def target_lines(rows: list[Row]) -> list[str]:
    """The nano issue's acceptance targets: met, missed by how much, or not measurable."""
    by_key = {r.key: r for r in rows}
    out = []
    labels = {"qa_accuracy": "QA answer accuracy >= 90 %", "asr_cer": "ASR CER <= 10 %",
              "nearest_voice": "role-play nearest-voice accuracy >= 80 %",
              "note_accuracy": "singing note accuracy >= 70 %"}
    for key, (threshold, direction) in TARGETS.items():
        row = by_key.get(key) or by_key.get(f"voice_{key}")
        label = labels[key]
        if row is None or row.value is None:
            out.append(f"{label}: not measured ({row.reason if row else 'no row'})")
            continue
        gap = (threshold - row.value) if direction == "higher" else (row.value - threshold)
        out.append(f"{label}: {row.value:.1f} % — " + ("met" if gap <= 0 else f"MISSED by {gap:.1f} points"))
    for key, name in (("intelligibility_fc", "forced choice"), ("intelligibility_cer", "own-ASR CER")):
        gen, ub = by_key.get(key), by_key.get(f"gt_{key}")
        label = f"intelligibility ({name}) within {INTELLIGIBILITY_GAP:g} points of the codec upper bound"
        if gen is None or ub is None or gen.value is None or ub.value is None:
            why = next((r.reason for r in (gen, ub) if r is not None and r.value is None), "no row")
            out.append(f"{label}: not measured ({why})")
            continue
        gap = (ub.value - gen.value) if key.endswith("fc") else (gen.value - ub.value)
        verdict = "met" if gap <= INTELLIGIBILITY_GAP else f"MISSED by {gap - INTELLIGIBILITY_GAP:.1f} points"
        out.append(f"{label}: {gen.value:.1f} % vs {ub.value:.1f} % (gap {gap:.1f}) — {verdict}")
    return out


def render(report: dict) -> str:
    lines = [f"# qinyu-nano evaluation: {Path(report['model']).name}", "",
             f"- **model**: `{report['model']}`", f"- **corpus**: `{report['corpus']}` (held-out split)",
             "- **items**: " + ", ".join(f"{k} {v}" for k, v in report["items"].items()) +
             (f" (first {report['limit']} of each kind)" if report.get("limit") else ""),
             f"- **codec**: {report['codec'] or 'none'}; **speaker encoder**: "
             f"{'yes' if report['speaker_encoder'] else 'none'}; **text-to-timbre**: {report['timbre'] or 'none'}",
             f"- **created**: {report['created']} ({report['seconds']} s)", "",
             "| metric | value | n | failed | method |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        row = Row(**r)
        lines.append(f"| {row.metric} | {row.cell()} | {row.n} | {row.failed} | {row.method.replace('|', '/')} |")
    lines += ["", "## Targets", ""] + [f"- {t}" for t in report["targets"]] + [""]
    details = list(dict.fromkeys(r["details"] for r in report["rows"] if r.get("details")))
    if details:
        lines += ["## Methods", ""] + [f"- {text}" for text in details] + [""]
    lines += ["## Plots", ""]
    for p in report["plots"]:
        lines.append(f"![{p['title']}]({p['path']})" if p["path"] else f"- {p['title']}: {p['note']}")
    lines.append("")
    if report["failures"]:
        lines += [f"## Items that failed to generate ({len(report['failures'])})", ""]
        lines += [f"- `{f['id']}`: {f['reason']}" for f in report["failures"][:100]] + [""]
    lines += [f"Per-item outputs: `{report['items_file']}`.", ""]
    return "\n".join(lines)


def plot_losses(model_dir: Path, png: Path):
    """(path, note): every ``*metrics.csv`` under the checkpoint folder (the speedrun puts
    each stage's in ``training/``, and the CTC encoder's)."""
    files = sorted(model_dir.rglob("*metrics.csv"))
    if not files:
        return None, f"no metrics.csv under {model_dir}: no loss curves"
    plt = _pyplot()
    if plt is None:
        return None, "matplotlib is not installed: no plots"
    from ..train.trainer import read_metrics

    fig, axes = plt.subplots(len(files), 1, figsize=(8, 3 * len(files)), squeeze=False)
    for ax, f in zip(axes[:, 0], files):
        rows = read_metrics(f)
        for key in ("loss", "text_loss", "audio_loss", "ctc_loss"):
            if rows and key in rows[0]:
                ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key)
        ax.set_title(f.relative_to(model_dir).as_posix())
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png, ""


def plot_pitch(contours: dict, gt_contours: dict, png: Path, limit: int = 4):
    keys = (list(contours) or list(gt_contours))[:limit]  # generated ones first
    if not keys:
        return None, "no singing item could be scored: no pitch plot"
    plt = _pyplot()
    if plt is None:
        return None, "matplotlib is not installed: no plots"
    fig, axes = plt.subplots(len(keys), 1, figsize=(9, 2.6 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        target = (contours[key] if key in contours else gt_contours[key])[0]
        t = (np.arange(len(target)) + 0.5) * HOP_S
        ax.plot(t, np.where(target > 0, target, np.nan), color="0.75", lw=5, label="target notes")
        for source, color, label in ((gt_contours, "tab:blue", "codec ground truth"), (contours, "tab:red", "generated")):
            if key in source:
                f0 = source[key][1]
                ax.plot((np.arange(len(f0)) + 0.5) * HOP_S, np.where(f0 > 0, f0, np.nan), color=color, lw=1.2,
                        label=label)
        ax.set_title(key)
        ax.set_ylabel("F0 Hz")
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png, ""


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
