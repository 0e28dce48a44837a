"""Chat rendering: messages + audio -> the hybrid token sequence with its labels.

ChatML as in the reference: ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. Message
text may hold ``<|audio|>`` placeholders, matched in order with entries of ``audios``:

* in a **user** message, a :class:`UserSpeech` expands to ``<|user_speaker|>``
  ``<|begin_of_audio|>`` N x ``<|context_of_audio|>`` ``<|end_of_audio|>`` (N encoder
  frames; the ``<|user_speaker|>`` is not doubled when the text already has one);
* in an **assistant** message, :class:`AssistantSpeech` codes are delayed and
  interleaved with the text (``text + <|end_of_conv|>``) by the schedule; an
  audio-only reply is ``<|begin_of_audio|>`` steps ``<|end_of_audio|>``. Several
  ``<|audio|>`` in one reply are concatenated into one utterance.

Labels follow the reference: only assistant content and its ``<|im_end|>\\n`` are
labelled; at an audio step the text label is the codebook-0 token and the codebook
labels are the step's in-codebook indices. By default (``label_policy="last_if_audio"``)
only the last assistant turn is labelled when the conversation has assistant audio.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .delay import apply_delay, check_codes
from .interleave import AUDIO, DEFAULT_SCHEDULE, interleave
from .vocab import AUDIO_TAG, IM_END, IM_START, SPEAKER, USER_SPEAKER, NUM_CODEBOOKS, TokenLayout

IGNORE_INDEX = -100

ASR_PROMPT = "Convert the speech to text.\n" + AUDIO_TAG
TTS_PROMPT = "Convert the text to speech.\n{text}"
VOICE_LINE = "Your Voice Embedding: " + SPEAKER  # what training appends to the system prompt

DEFAULT_NAME = "QinYu-4o"
DEFAULT_ORIGIN = "TME and Youtu Collaboration."
DEFAULT_ROLE_DESCRIPTION = "一个声音可爱甜美的女性。"

ROLE_ALIASES = {"human": "user", "gpt": "assistant", "observation": "system"}
LABEL_POLICIES = ("last_if_audio", "all", "last", "none")


class RenderError(ValueError):
    pass


@dataclass(frozen=True)
class UserSpeech:
    """User speech, known to the layout only by its number of encoder frames."""

    num_frames: int


@dataclass(frozen=True)
class AssistantSpeech:
    """Assistant speech as codec codes, shape (8, T)."""

    codes: np.ndarray


@dataclass
class RenderedSequence:
    """One rendered conversation.

    ``audio_steps[p]`` holds the 8 in-codebook indices of the audio step at position p
    (-1 elsewhere); ``audio_labels[p]`` the same where labelled (-100 elsewhere).
    ``user_audio_positions[i]`` are the ``<|context_of_audio|>`` positions of user
    audio i; ``speaker_positions`` the ``<|speaker|>``/``<|user_speaker|>`` positions in
    order of appearance (the order speaker vectors must be given in).
    """

    input_ids: list[int]
    labels: list[int]
    audio_steps: np.ndarray
    audio_labels: np.ndarray
    user_audio_positions: list[list[int]] = field(default_factory=list)
    speaker_positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)

    def audio_runs(self) -> list[tuple[int, int]]:
        """Half-open [start, end) runs of consecutive audio steps."""
        mask = self.audio_steps[:, 0] >= 0
        runs, start = [], None
        for p, m in enumerate(mask):
            if m and start is None:
                start = p
            if not m and start is not None:
                runs.append((start, p))
                start = None
        if start is not None:
            runs.append((start, len(mask)))
        return runs


def user_speech_frames(num_samples: int, sample_rate: int = 16000, query_frames: int = 4) -> int:
    """Encoder frames (= ``<|context_of_audio|>`` count) for user speech.

    SenseVoice: Kaldi fbank with 25 ms windows every 10 ms, LFR stacking every 6 frames,
    then ``query_frames`` prepended (4 in the 8B layout, 0 in the 4B layout).
    """
    if sample_rate != 16000:
        num_samples = int(round(num_samples * 16000 / sample_rate))
    if num_samples < 400:
        raise RenderError(f"user speech of {num_samples} samples at 16 kHz is shorter than one 25 ms frame")
    fbank_frames = 1 + (num_samples - 400) // 160
    return math.ceil(fbank_frames / 6) + query_frames


def system_prompt(role_description: str | None = DEFAULT_ROLE_DESCRIPTION, name: str | None = DEFAULT_NAME,
                  origin: str | None = DEFAULT_ORIGIN, interleaved: bool = True, voice: bool = True) -> str:
    """The reference's inference system prompt (speech chat and role-play)."""
    lines = []
    if name:
        lines.append(f"Your Name: {name}")
    if origin:
        lines.append(f"Your Origin: {origin}")
    if interleaved:
        lines.append("Respond in text-audio interleaved manner.")
    if voice:
        lines.append(f"Your Voice Embedding: {SPEAKER}.")
    if role_description:
        lines.append(f"Your Role Description: {role_description}")
    return "\n".join(lines)


def with_voice_prompt(messages: list[dict]) -> list[dict]:
    """Add the assistant-voice line to the system prompt, as training does.

    Appended to an existing first system message (joined by a newline), otherwise a new
    system message holding only that line is put first.
    """
    messages = [dict(m) for m in messages]
    if messages and _role(messages[0], 0) == "system":
        messages[0]["content"] = messages[0]["content"] + "\n" + VOICE_LINE
    else:
        messages.insert(0, {"role": "system", "content": VOICE_LINE})
    return messages


def asr_messages() -> list[dict]:
    return [{"role": "user", "content": ASR_PROMPT}]


def tts_messages(text: str, with_reply_audio: bool = False) -> list[dict]:
    """TTS prompt. For training, the reply is the same text with its audio."""
    messages = [{"role": "user", "content": TTS_PROMPT.format(text=text)}]
    if with_reply_audio:
        messages.append({"role": "assistant", "content": text + AUDIO_TAG})
    return messages


def drop_assistant_speech(messages: list[dict], audios: list) -> tuple[list[dict], list]:
    """The multi-turn history policy: keep the assistant's text, drop its speech.

    Removes ``<|audio|>`` from assistant messages together with their audio entries;
    an assistant message left without text is dropped with its preceding user turn
    kept (the model still sees what was asked).
    """
    out_messages, out_audios, k = [], [], 0
    for i, m in enumerate(messages):
        content = _content(m, i)
        n = content.count(AUDIO_TAG)
        entries = audios[k:k + n]
        k += n
        if _role(m, i) == "assistant":
            text = content.replace(AUDIO_TAG, "").strip()
            if text:
                out_messages.append({**m, "content": text})
            continue
        out_messages.append(m)
        out_audios.extend(entries)
    if k != len(audios):
        raise RenderError(f"{len(audios)} audio entries given but the messages hold {k} {AUDIO_TAG} placeholders")
    return out_messages, out_audios


def _role(message, index) -> str:
    if not isinstance(message, dict) or "role" not in message:
        raise RenderError(f"message {index} must be a dict with 'role' and 'content', got {message!r}")
    role = ROLE_ALIASES.get(message["role"], message["role"])
    if role not in ("system", "user", "assistant"):
        raise RenderError(f"message {index} has unknown role {message['role']!r}")
    return role


def _content(message, index) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise RenderError(f"message {index}: 'content' must be a string, got {content!r}")
    return content


class _Builder:
    def __init__(self):
        self.ids: list[int] = []
        self.labels: list[int] = []
        self.steps: list[np.ndarray | None] = []
        self.step_labelled: list[bool] = []
        self.user_audio_positions: list[list[int]] = []

    def text(self, ids, labelled: bool):
        for i in ids:
            self.ids.append(i)
            self.labels.append(i if labelled else IGNORE_INDEX)
            self.steps.append(None)
            self.step_labelled.append(False)

    def audio_step(self, layout: TokenLayout, step: np.ndarray, labelled: bool):
        token = layout.audio_token_id(0, int(step[0]))
        self.ids.append(token)
        self.labels.append(token if labelled else IGNORE_INDEX)
        self.steps.append(step)
        self.step_labelled.append(labelled)


def render(messages: list[dict], tokenizer, layout: TokenLayout, audios: list | None = None, *,
           schedule=DEFAULT_SCHEDULE, add_generation_prompt: bool = False,
           label_policy: str = "last_if_audio") -> RenderedSequence:
    """Render a conversation to input ids, labels and audio-step arrays.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` extended with the qinyu vocabulary.
    """
    audios = list(audios or [])
    if label_policy not in LABEL_POLICIES:
        raise RenderError(f"label_policy {label_policy!r} is not one of {LABEL_POLICIES}")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise RenderError("messages must be a non-empty list of {'role', 'content'} dicts")
    roles = [_role(m, i) for i, m in enumerate(messages)]
    contents = [_content(m, i) for i, m in enumerate(messages)]

    n_tags = sum(c.count(AUDIO_TAG) for c in contents)
    if n_tags != len(audios):
        raise RenderError(f"{len(audios)} audio entries given but the messages hold {n_tags} {AUDIO_TAG} placeholders")

    assistant_turns = [i for i, r in enumerate(roles) if r == "assistant"]
    has_assistant_audio = any(AUDIO_TAG in contents[i] for i in assistant_turns)
    if label_policy == "all" or (label_policy == "last_if_audio" and not has_assistant_audio):
        labelled_turns = set(assistant_turns)
    elif label_policy in ("last", "last_if_audio") and assistant_turns:
        labelled_turns = {assistant_turns[-1]}
    else:
        labelled_turns = set()

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False).ids if text else []

    b = _Builder()
    audio_iter = iter(enumerate(audios))
    for i, (role, content) in enumerate(zip(roles, contents)):
        labelled = i in labelled_turns
        b.text(encode(f"{IM_START}{role}\n"), labelled=False)
        if role == "assistant":
            _render_assistant(b, i, content, audio_iter, encode, layout, schedule, labelled)
        else:
            _render_user_or_system(b, i, role, content, audio_iter, encode, layout)
        b.text(encode(f"{IM_END}\n"), labelled=labelled)
    if add_generation_prompt:
        b.text(encode(f"{IM_START}assistant\n"), labelled=False)

    length = len(b.ids)
    audio_steps = np.full((length, NUM_CODEBOOKS), -1, dtype=np.int64)
    audio_labels = np.full((length, NUM_CODEBOOKS), IGNORE_INDEX, dtype=np.int64)
    for p, (step, lab) in enumerate(zip(b.steps, b.step_labelled)):
        if step is not None:
            audio_steps[p] = step
            if lab:
                audio_labels[p] = step
    speaker_positions = [p for p, t in enumerate(b.ids) if t in (layout.speaker, layout.user_speaker)]
    return RenderedSequence(b.ids, b.labels, audio_steps, audio_labels, b.user_audio_positions, speaker_positions)


def _render_user_or_system(b: _Builder, index, role, content, audio_iter, encode, layout: TokenLayout):
    pieces = content.split(AUDIO_TAG)
    for j, piece in enumerate(pieces):
        b.text(encode(piece), labelled=False)
        if j == len(pieces) - 1:
            break
        k, entry = next(audio_iter)
        if role != "user":
            raise RenderError(f"message {index}: {AUDIO_TAG} is only allowed in user and assistant messages")
        if not isinstance(entry, UserSpeech):
            raise RenderError(f"audio entry {k} (message {index}, user) must be UserSpeech, got {type(entry).__name__}")
        if not isinstance(entry.num_frames, int) or entry.num_frames <= 0:
            raise RenderError(f"audio entry {k}: user speech needs a positive frame count, got {entry.num_frames!r}")
        if not b.ids or b.ids[-1] != layout.user_speaker:
            b.text([layout.user_speaker], labelled=False)
        b.text([layout.begin_of_audio], labelled=False)
        start = len(b.ids)
        b.text([layout.context_of_audio] * entry.num_frames, labelled=False)
        b.user_audio_positions.append(list(range(start, start + entry.num_frames)))
        b.text([layout.end_of_audio], labelled=False)


_ASSISTANT_AUDIO = re.compile(r"^(?P<text>.*?)(?P<tags>(?:" + re.escape(AUDIO_TAG) + r")+)$", re.S)


def _render_assistant(b: _Builder, index, content, audio_iter, encode, layout: TokenLayout, schedule, labelled):
    n_tags = content.count(AUDIO_TAG)
    if n_tags == 0:
        b.text(encode(content), labelled)
        return
    match = _ASSISTANT_AUDIO.match(content)
    if not match:
        raise RenderError(f"message {index}: assistant audio must come after the text, as 'text{AUDIO_TAG}'")
    codes = []
    for _ in range(n_tags):
        k, entry = next(audio_iter)
        if not isinstance(entry, AssistantSpeech):
            raise RenderError(f"audio entry {k} (message {index}, assistant) must be AssistantSpeech, got {type(entry).__name__}")
        try:
            codes.append(check_codes(entry.codes))
        except ValueError as e:
            raise RenderError(f"audio entry {k} (message {index}): {e}") from None
    steps = list(apply_delay(np.concatenate(codes, axis=1)))
    text = match.group("text")
    if not text:
        b.text([layout.begin_of_audio], labelled)
        for step in steps:
            b.audio_step(layout, step, labelled)
        b.text([layout.end_of_audio], labelled)
        return
    for kind, item in interleave(encode(text) + [layout.end_of_conv], steps, schedule):
        if kind == AUDIO:
            b.audio_step(layout, item, labelled)
        else:
            b.text([item], labelled)
