"""The training sample format (JSON Lines, one conversation per line) and its validator.

    {"id": "greet-001",                       # optional; defaults to file:line
     "task": "chat",                          # chat | asr | tts | roleplay | singing
     "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "<|audio|>"},
        {"role": "assistant", "content": "Hello there!<|audio|>"}],
     "audios": ["wavs/q1.wav", "wavs/a1.wav"], # one per <|audio|>, in message order
     "voice": {"speaker": "tian"}}             # optional assistant voice:
                                               #   {"speaker": name in the voice table}
                                               #   {"vector": "x.npy" | "x.pt"} or {"clip": "ref.wav"}

Paths are relative to the JSONL file's folder. Roles ``human``/``gpt``/``observation``
are accepted as aliases (as in the reference). User audio is speech the model hears;
assistant audio is speech it learns to say (codec codes). Assistant content is
``text<|audio|>`` (interleaved), ``<|audio|>`` (speech only) or text (text only).

``check_file`` reports every bad line with its line number and field; training never
starts on a file that fails it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

AUDIO_TAG = "<|audio|>"
TASKS = ("chat", "asr", "tts", "roleplay", "singing")
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant",
         "observation": "system"}
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class Problem:
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


class DataError(ValueError):
    def __init__(self, path, problems: list[Problem]):
        self.problems = problems
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"{path}: {len(problems)} problem(s):\n  {shown}{more}")


def audio_roles(messages: list[dict]) -> list[str]:
    """The role ('user' or 'assistant') of each <|audio|> placeholder, in order."""
    roles = []
    for m in messages:
        roles += [ROLES.get(m.get("role"), m.get("role"))] * str(m.get("content", "")).count(AUDIO_TAG)
    return roles


def check_sample(sample, line: int, base: Path, check_files: bool = True) -> list[Problem]:
    """Every problem of one sample (an empty list when it is fine)."""
    out: list[Problem] = []

    def bad(field, message):
        out.append(Problem(line, field, message))

    if not isinstance(sample, dict):
        bad("(line)", f"expected a JSON object, got {type(sample).__name__}")
        return out
    unknown = sorted(set(sample) - {"id", "task", "messages", "audios", "voice", "meta"})
    if unknown:
        bad("(line)", f"unknown field(s) {unknown}")
    task = sample.get("task", "chat")
    if task not in TASKS:
        bad("task", f"{task!r} is not one of {TASKS}")
    messages = sample.get("messages")
    if not isinstance(messages, list) or not messages:
        bad("messages", "must be a non-empty list of {role, content}")
        return out
    assistant_turns = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            bad(f"messages[{i}]", "must be an object with role and content")
            continue
        role = ROLES.get(m.get("role"))
        if role is None:
            bad(f"messages[{i}].role", f"unknown role {m.get('role')!r}; expected one of {sorted(ROLES)}")
        content = m.get("content")
        if not isinstance(content, str):
            bad(f"messages[{i}].content", "must be a string")
            continue
        if role == "assistant":
            assistant_turns += 1
            if not content.strip():
                bad(f"messages[{i}].content", "empty assistant turn")
            elif AUDIO_TAG in content and not content.rstrip().endswith(AUDIO_TAG):
                bad(f"messages[{i}].content", f"assistant audio must come after the text ('text{AUDIO_TAG}')")
        if role == "system" and AUDIO_TAG in content:
            bad(f"messages[{i}].content", f"{AUDIO_TAG} is not allowed in a system message")
    if assistant_turns == 0:
        bad("messages", "no assistant turn to learn from")
    roles = audio_roles([m for m in messages if isinstance(m, dict)])
    audios = sample.get("audios", [])
    if not isinstance(audios, list) or not all(isinstance(a, str) for a in audios):
        bad("audios", "must be a list of file paths")
        audios = []
    if len(audios) != len(roles):
        bad("audios", f"{len(audios)} file(s) for {len(roles)} {AUDIO_TAG} placeholder(s)")
    # the reference's rule: assistant speech only in the last assistant turn (history is text)
    last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and ROLES.get(m.get("role")) == "assistant"),
               default=None)
    for i, m in enumerate(messages):
        if (isinstance(m, dict) and ROLES.get(m.get("role")) == "assistant" and i != last
                and AUDIO_TAG in str(m.get("content", ""))):
            bad(f"messages[{i}].content", "assistant speech is only allowed in the last assistant turn")
    if check_files:
        for j, a in enumerate(audios):
            _check_audio_file(base / a, f"audios[{j}]", bad)
    voice = sample.get("voice")
    if voice is not None:
        if not isinstance(voice, dict) or len(voice) != 1 or next(iter(voice)) not in ("speaker", "vector", "clip"):
            bad("voice", "must be one of {\"speaker\": name}, {\"vector\": file}, {\"clip\": file}")
        elif check_files and "clip" in voice:
            _check_audio_file(base / voice["clip"], "voice.clip", bad)
        elif check_files and "vector" in voice and not (base / voice["vector"]).is_file():
            bad("voice.vector", f"file not found: {voice['vector']}")
    return out


def _check_audio_file(path: Path, field: str, bad) -> None:
    import soundfile as sf

    if not path.is_file():
        bad(field, f"audio file not found: {path}")
        return
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as e:
        bad(field, f"unreadable audio file {path}: {e}")
        return
    if info.frames == 0:
        bad(field, f"audio file {path} has no samples")


def read_jsonl(path) -> list[tuple[int, object]]:
    """(line number, parsed object or a Problem) for every non-empty line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                rows.append((n, json.loads(text)))
            except json.JSONDecodeError as e:
                rows.append((n, Problem(n, "(line)", f"not valid JSON: {e.msg} at column {e.colno}")))
    return rows


def check_file(path, check_files: bool = True) -> tuple[int, list[Problem]]:
    """(number of samples, problems) for a JSONL file."""
    path = Path(path)
    problems, count = [], 0
    for n, obj in read_jsonl(path):
        count += 1
        if isinstance(obj, Problem):
            problems.append(obj)
        else:
            problems += check_sample(obj, n, path.parent, check_files)
    if count == 0:
        problems.append(Problem(0, "(file)", "no samples"))
    return count, problems


def load_samples(path, check_files: bool = True) -> list[dict]:
    """All samples of a file that passes the check; raises DataError listing every problem."""
    count, problems = check_file(path, check_files)
    if problems:
        raise DataError(path, problems)
    return [obj for _, obj in read_jsonl(path)]
