"""Batched, KV-cached generation over the hybrid LM.

Every active request keeps a row in one batched KV cache. A request joins after its
own prefill (its cache is left-padded to the batch length, or the batch to its
length) and leaves by dropping its row, so requests come and go between steps. Each
step runs one forward for all rows with a 2-D attention mask that hides the left
padding and per-row positions, then every row chooses its next token on its own:

* text/codebook 0 from the shared softmax (codebooks 1..7 masked out, as the reference);
* if that is an audio token, codebooks 1..7 from their slices; the step's 8 tokens are
  fed back as the mean of their embeddings (``audio_steps``);
* stop at ``<|im_end|>`` or after ``max_steps``.

Greedy decoding of a batch equals decoding each request alone (tested token for token).
"""

from __future__ import annotations

import collections
import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..layout import CODEBOOK_SIZE, NUM_CODEBOOKS
from .sampling import SamplingParams, penalise, pick
from .stream import DecodeState


class EngineError(ValueError):
    pass


@dataclass
class Request:
    """A rendered prompt: ids ending with ``<|im_start|>assistant\\n``, the user-speech
    features and the speaker vectors (in placeholder order) it needs."""

    input_ids: list[int]
    audio_features: list[np.ndarray] = field(default_factory=list)
    speaker_embeddings: np.ndarray | None = None
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class StepOutput:
    """What one request produced in one step."""

    request_id: int
    text_id: int | None = None  # a text token (None for an audio step)
    audio_step: np.ndarray | None = None  # the 8 indices of an audio step
    frames: np.ndarray | None = None  # newly completed frames (8, n)
    finished: str | None = None


class _Row:
    def __init__(self, rid: int, state: DecodeState, position: int, pending: int):
        self.rid, self.state, self.position = rid, state, position
        self.pending_ids: int = pending  # the token to feed next (its id; audio steps: codebook-0 id)
        self.pending_step: np.ndarray | None = None
        self.voice: torch.Tensor | None = None  # the assistant voice its audio steps carry (speaker_at_audio_steps)


class Engine:
    def __init__(self, model, max_batch: int = 16):
        self.model = model.eval()
        self.layout = model.layout
        self.max_batch = max_batch
        self.max_positions = model.config.max_positions or 1 << 30
        vocab = model.lm_head.out_features
        first = self.layout.first_audio_token_id
        # tokens the text/codebook-0 choice may take: everything below the cb1..7 block and above it,
        # except the embedding rows past the tokenizer (padding rows)
        allowed = torch.ones(vocab, dtype=torch.bool)
        allowed[first:self.layout.audio_end] = False
        allowed[self.layout.num_tokens:] = False
        # placeholders filled from outside the LM (speech frames, voices) are never generated
        for token in (self.layout.context_of_audio, self.layout.audio_tag, self.layout.speaker,
                      self.layout.user_speaker):
            allowed[token] = False
        self.text_mask = torch.where(allowed, 0.0, float("-inf"))
        self.cache = None
        self.rows: list[_Row] = []
        self.attention: torch.Tensor | None = None  # [B, L] 1 = real
        self._ids = itertools.count()
        self.forward_seconds = 0.0  # time inside the model forward (decode steps)
        self.step_seconds = 0.0  # whole decode steps

    # -- requests join and leave --------------------------------------------------------
    @torch.no_grad()
    def add(self, request: Request) -> int:
        """Prefill a request and add it to the batch; returns its id."""
        if len(self.rows) >= self.max_batch:
            raise EngineError(f"the engine is full ({self.max_batch} concurrent requests)")
        if not request.input_ids:
            raise EngineError("empty prompt")
        if len(request.input_ids) + request.params.max_steps > self.max_positions:
            raise EngineError(f"prompt of {len(request.input_ids)} tokens + {request.params.max_steps} steps exceeds "
                              f"the model's context of {self.max_positions} positions")
        device = self.model.device
        ids = torch.tensor([request.input_ids], device=device)
        spk = None if request.speaker_embeddings is None else torch.as_tensor(
            np.asarray(request.speaker_embeddings, dtype=np.float32), device=device)
        feats = [torch.from_numpy(np.asarray(f, dtype=np.float32)).to(device) for f in request.audio_features] or None
        from transformers import DynamicCache

        cache = DynamicCache()
        out = self.model(input_ids=ids, audio_features=feats, speaker_embeddings=spk, cache=cache, use_cache=True,
                         logits_to_keep=1)
        rid = next(self._ids)
        gen = torch.Generator().manual_seed(request.params.seed)
        state = DecodeState(request.params, gen)
        state.recent_cb0 = collections.deque(maxlen=request.params.repetition_window)
        row = _Row(rid, state, len(request.input_ids), -1)
        if self.model.config.speaker_at_audio_steps:
            row.voice = _last_voice(request.input_ids, spk, self.layout)
        self._merge(out.cache, len(request.input_ids))
        self.rows.append(row)
        self._choose(row, out.logits[0, -1].float().cpu())
        return rid

    def state(self, rid: int) -> DecodeState:
        for row in self.rows:
            if row.rid == rid:
                return row.state
        raise EngineError(f"no active request {rid}")

    def cancel(self, rid: int) -> None:
        """Stop a request now and free its cache row."""
        for i, row in enumerate(self.rows):
            if row.rid == rid:
                row.state.finished = row.state.finished or "cancelled"
                self._drop([i])
                return

    def _merge(self, cache, length: int) -> None:
        from transformers import DynamicCache

        device = self.model.device
        if self.cache is None:
            self.cache, self.attention = cache, torch.ones(1, length, dtype=torch.long, device=device)
            return
        have = self.attention.shape[1]
        width = max(have, length)
        merged = DynamicCache()
        for i, (old, new) in enumerate(zip(self.cache.layers, cache.layers)):
            k = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            v = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)])
            merged.update(k, v, i)
        mask_old = torch.nn.functional.pad(self.attention, (width - have, 0))
        mask_new = torch.nn.functional.pad(torch.ones(1, length, dtype=torch.long, device=device), (width - length, 0))
        self.cache, self.attention = merged, torch.cat([mask_old, mask_new])

    def _drop(self, indices: list[int]) -> None:
        keep = [i for i in range(len(self.rows)) if i not in set(indices)]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.attention = None, None
            return
        from transformers import DynamicCache

        index = torch.tensor(keep, device=self.attention.device)
        attention = self.attention[index]
        cut = int((attention.sum(0) == 0).long().cumprod(0).sum())  # columns that are padding in every row
        cache = DynamicCache()
        for i, layer in enumerate(self.cache.layers):
            cache.update(layer.keys[index][:, :, cut:], layer.values[index][:, :, cut:], i)
        self.cache, self.attention = cache, attention[:, cut:]

    # -- one step for every row ---------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[StepOutput]:
        """Feed every row its pending token, choose the next ones; finished rows leave."""
        if not self.rows:
            return []
        started = time.perf_counter()
        try:
            return self._step()
        finally:
            self.step_seconds += time.perf_counter() - started

    def _step(self) -> list[StepOutput]:
        outputs = [self._emit(row) for row in self.rows]
        done = [i for i, row in enumerate(self.rows) if row.state.finished]
        if done:
            self._drop(done)
        if not self.rows:
            return outputs
        b, device = len(self.rows), self.model.device
        ids = torch.tensor([[row.pending_ids] for row in self.rows], device=device)
        steps = torch.full((b, 1, NUM_CODEBOOKS), -1, dtype=torch.long)
        for i, row in enumerate(self.rows):
            if row.pending_step is not None:
                steps[i, 0] = torch.from_numpy(row.pending_step)
        positions = torch.tensor([[row.position] for row in self.rows], device=device)
        attention = torch.cat([self.attention, torch.ones(b, 1, dtype=torch.long, device=device)], dim=1)
        started = time.perf_counter()
        voices = [row.voice for row in self.rows] if self.model.config.speaker_at_audio_steps else None
        out = self.model(input_ids=ids, audio_steps=steps.to(device), position_ids=positions, attention_mask=attention,
                         cache=self.cache, use_cache=True, logits_to_keep=1, step_voices=voices)
        self.forward_seconds += time.perf_counter() - started
        self.cache, self.attention = out.cache, attention  # only once the forward succeeded
        logits = out.logits[:, -1].float().cpu()  # choices are made on the CPU, with per-request generators
        for i, row in enumerate(self.rows):
            row.position += 1
            self._choose(row, logits[i])
        return outputs

    def _emit(self, row: _Row) -> StepOutput:
        """Record the token chosen last step; mark the row finished when it must stop."""
        s = row.state
        out = StepOutput(row.rid)
        if row.pending_step is not None:
            s.add_audio_step(row.pending_step)
            out.audio_step = row.pending_step
        else:
            s.text_ids.append(row.pending_ids)
            out.text_id = row.pending_ids
        s.num_steps += 1
        if row.pending_step is None and row.pending_ids == self.layout.im_end:
            s.finished = "stop"
        elif s.num_steps >= s.params.max_steps or row.position + 1 >= self.max_positions:
            s.finished = "length"  # the step budget, or the model's context, is used up
        out.frames = s.finished_frames(final=bool(s.finished))
        out.finished = s.finished
        return out

    def _choose(self, row: _Row, logits: torch.Tensor) -> None:
        """Choose the next token for a row from its last logits (the reference's rule)."""
        s, p, layout = row.state, row.state.params, self.layout
        text_logits = logits.float() + self.text_mask
        if p.enforce_schedule:
            phase = s.schedule_phase(p.enforce_schedule)
            if phase != "free":
                cb0 = torch.zeros_like(text_logits, dtype=torch.bool)
                cb0[layout.audio_base:layout.audio_base + CODEBOOK_SIZE] = True
                text_logits = text_logits.masked_fill(cb0 if phase == "text" else ~cb0, float("-inf"))
        token = pick(text_logits, p, s.generator)
        if layout.is_codebook0(token) and s.steps and p.repetition_penalty != 1.0 and p.repetition_window and s.recent_cb0:
            token = pick(penalise(text_logits, list(s.recent_cb0), p.repetition_penalty), p, s.generator)
        if not layout.is_codebook0(token):
            row.pending_ids, row.pending_step = token, None
            s.chunk_text += 1
            s.text_over = s.text_over or token == layout.end_of_conv
            return
        s.chunk_audio += 1
        step = np.empty(NUM_CODEBOOKS, dtype=np.int64)
        step[0] = token - layout.audio_base
        for q in range(1, NUM_CODEBOOKS):
            start = layout.audio_base + CODEBOOK_SIZE * q
            step[q] = pick(logits[start:start + CODEBOOK_SIZE].float(), p, s.generator)
        s.recent_cb0.append(token)
        row.pending_ids, row.pending_step = token, step


def _last_voice(input_ids: list[int], speaker_embeddings: torch.Tensor | None, layout) -> torch.Tensor | None:
    """The vector of the prompt's last ``<|speaker|>`` (the assistant voice; vectors are given in
    the order of the ``<|speaker|>``/``<|user_speaker|>`` placeholders), or None without one."""
    placeholders = [t for t in input_ids if t in (layout.speaker, layout.user_speaker)]
    voices = [k for k, t in enumerate(placeholders) if t == layout.speaker]
    if not voices or speaker_embeddings is None:
        return None
    return speaker_embeddings.reshape(-1, speaker_embeddings.shape[-1])[voices[-1]]


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """[B, H, L, D] -> [B, H, width, D], zeros on the left."""
    return torch.nn.functional.pad(x, (0, 0, width - x.shape[2], 0))


@dataclass
class Result:
    text_ids: list[int]
    codes: np.ndarray  # (8, T)
    finished: str
    steps: int
    invalid_codes: int
    seconds: float


def generate(model, requests: list[Request], max_batch: int = 16) -> list[Result]:
    """Decode requests together (all join at once) to the end; results in order."""
    engine = Engine(model, max_batch=max(max_batch, len(requests)))
    start = time.time()
    ids = [engine.add(r) for r in requests]
    frames: dict[int, list[np.ndarray]] = {i: [] for i in ids}
    finished: dict[int, DecodeState] = {}
    states = {row.rid: row.state for row in engine.rows}
    while engine.rows:
        for out in engine.step():
            if out.frames is not None and out.frames.shape[1]:
                frames[out.request_id].append(out.frames)
            if out.finished:
                finished[out.request_id] = states[out.request_id]
    seconds = time.time() - start
    results = []
    for i in ids:
        st = finished[i]
        codes = np.concatenate(frames[i], axis=1) if frames[i] else np.zeros((NUM_CODEBOOKS, 0), dtype=np.int64)
        results.append(Result(st.text_ids, codes, st.finished, st.num_steps, st.invalid_codes, seconds))
    return results
