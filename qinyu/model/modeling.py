"""The hybrid LM: one decoder-only transformers backbone that reads text, user speech
and speaker vectors, and predicts text plus 8 codebooks.

Parameter names follow the official checkpoints: the backbone is ``model`` (keys
``model.embed_tokens``, ``model.layers.*``, ``model.norm``) and the speech modules are
registered *inside* it (``model.audio_model.model.*``, ``model.audio_projection.*``,
``model.speaker_projection.*``) next to ``lm_head``, so an official state dict maps
onto this module key for key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import CODEBOOK_SIZE, NUM_CODEBOOKS, TokenLayout
from .audio_encoder import AudioModel, build_audio_encoder
from .checkpoint import (
    CONFIG_NAME, TOKENIZER_NAME, CheckpointError, CheckpointFolder, check_complete, check_tensors, open_checkpoint,
    save_weights,
)
from .config import ConfigError, QinYuConfig
from .loss import AUDIO_BLOCK, LossSums, hybrid_loss, loss_rows, loss_sums_at_rows
from .projector import Projector

class InputError(ValueError):
    pass


@dataclass
class QinYuOutput:
    logits: torch.Tensor | None  # None with return_loss_sums (training: only the rows the loss reads)
    hidden_states: torch.Tensor  # after the backbone's final norm
    loss: torch.Tensor | None = None
    text_loss: torch.Tensor | None = None
    audio_loss: torch.Tensor | None = None
    audio_loss_per_codebook: torch.Tensor | None = None
    loss_sums: LossSums | None = None
    cache: object | None = None


def build_backbone(config: QinYuConfig) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    params = dict(config.backbone)
    model_type = params.pop("model_type")
    try:
        bb_config = AutoConfig.for_model(model_type, **params)
    except ValueError as e:
        raise ConfigError(f"backbone: {e}") from None
    return AutoModel.from_config(bb_config, attn_implementation=config.attn_implementation)


def ctc_compress(logits: torch.Tensor) -> torch.Tensor:
    """CTC logits [T, classes] (the last class the blank) -> [T, classes]: the frames where
    greedy CTC emits a token (argmax not the blank and not the previous frame's argmax),
    moved to the front in order, then zeros. The span keeps its length (the prompt's
    placeholder count stays a function of the features), and audio position k holds the
    k-th token heard, so reading it back is copying in order rather than finding the frame."""
    ids = logits.argmax(-1)
    previous = torch.cat([ids.new_full((1,), -1), ids[:-1]])
    keep = (ids != logits.shape[-1] - 1) & (ids != previous)
    out = torch.zeros_like(logits)
    out[: int(keep.sum())] = logits[keep]
    return out


class QinYuForConditionalGeneration(nn.Module):
    def __init__(self, config: QinYuConfig):
        super().__init__()
        self.config = config
        self.layout: TokenLayout = config.layout
        hidden = config.hidden_size
        self.model = build_backbone(config)
        vocab = self.model.get_input_embeddings().num_embeddings
        if vocab < self.layout.vocab_size:
            raise ConfigError(f"backbone has {vocab} embedding rows, the token layout needs {self.layout.vocab_size}")
        # Speech modules live inside the backbone module for official key names.
        if config.audio_encoder is not None:
            self.model.audio_model = AudioModel(build_audio_encoder(config.audio_encoder))
        self.model.audio_projection = Projector(config.audio_encoder_output_size, hidden,
                                                config.audio_projection_norm_type)
        if config.use_speaker_embedding:
            self.model.speaker_projection = Projector(config.speaker_embedding_size, hidden,
                                                      config.speaker_projection_norm_type)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.audio_heads = None
        if config.use_audio_heads:
            self.audio_heads = nn.ModuleList(nn.Linear(hidden, CODEBOOK_SIZE, bias=False)
                                             for _ in range(NUM_CODEBOOKS - 1))
        std = float(config.backbone.get("initializer_range", 0.02))
        for module in [self.lm_head, *self.model.audio_projection.mlp[::2]] + (
                list(self.model.speaker_projection.mlp[::2]) if config.use_speaker_embedding else []) + (
                list(self.audio_heads) if self.audio_heads is not None else []):
            nn.init.normal_(module.weight, std=std)
        if self.tied:
            self.lm_head.weight = self.model.get_input_embeddings().weight
        if config.audio_ctc_embedding:
            head = getattr(getattr(self.audio_encoder, "ctc", None), "ctc_lo", None)
            if head is None or head.in_features != config.audio_encoder_output_size or head.out_features - 1 > vocab:
                raise ConfigError("audio_ctc_embedding needs an audio encoder whose CTC head (ctc.ctc_lo) reads its "
                                  "output frames and whose classes are text tokens of the LM's vocabulary + the blank")

    # -- properties ---------------------------------------------------------------
    @property
    def tied(self) -> bool:
        return bool(self.config.backbone.get("tie_word_embeddings", False))

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def audio_encoder(self) -> nn.Module | None:
        audio_model = getattr(self.model, "audio_model", None)
        return audio_model.model if audio_model is not None else None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    # -- inputs -------------------------------------------------------------------
    def encode_audio(self, features, lengths=None) -> list[torch.Tensor]:
        """User-speech features -> list of encoder outputs [len_i, 512], one per utterance.

        ``features`` is a list of [T_i, D] tensors or a padded [N, T, D] tensor with
        ``lengths``."""
        encoder = self.audio_encoder
        if encoder is None:
            raise InputError("this checkpoint has no audio encoder (config 'audio_encoder' is null); "
                             "pass encoder outputs as audio_embeds instead")
        if isinstance(features, (list, tuple)):
            lengths = torch.tensor([f.shape[0] for f in features], device=self.device)
            features = nn.utils.rnn.pad_sequence(list(features), batch_first=True)
        elif lengths is None:
            lengths = torch.full((features.shape[0],), features.shape[1], device=features.device)
        out, out_lengths = encoder(features.to(self.device, self.dtype), lengths.to(self.device))
        frames = [o[:int(n)] for o, n in zip(out, out_lengths)]
        if self.config.audio_ctc_compress:
            frames = [ctc_compress(f) for f in frames]
        return frames

    def project_audio(self, frames: torch.Tensor) -> torch.Tensor:
        """Encoder frames [N, D] -> the LM input vectors [N, H] at ``<|context_of_audio|>``.

        With ``audio_ctc_embedding`` each frame also gets the LM's embeddings of the text
        tokens weighted by the encoder's CTC posteriors over them (the blank, the last class,
        adds nothing), as LegoSLM builds its speech inputs: a frame where CTC hears a word then
        looks like that word's token, so reading the speech can become copying tokens. (On
        qinyu-nano it did not change the LM's ASR: run J in docs/nano.md.)"""
        out = self.model.audio_projection(frames)
        if self.config.audio_ctc_embedding:
            posteriors = self.audio_encoder.ctc.ctc_lo(frames).float().softmax(dim=-1)[:, :-1]
            table = self.model.get_input_embeddings().weight[:posteriors.shape[-1]]
            out = out + (posteriors.to(table.dtype) @ table).to(out.dtype)
        return out

    def embed_inputs(self, input_ids: torch.Tensor, audio_steps=None, audio_features=None, audio_feature_lengths=None,
                     audio_embeds=None, speaker_embeddings=None, position_ids=None, step_voices=None) -> torch.Tensor:
        """Token embeddings with the three injections:

        * audio steps (``audio_steps`` [B, L, 8] in-codebook indices, -1 elsewhere): the
          mean of the step's 8 token embeddings;
        * user speech: projected encoder frames at ``<|context_of_audio|>`` positions,
          utterances in order of appearance (batch-major);
        * speaker vectors [N, 192] (or [1, N, 192], or a list per sample): projected, at
          ``<|speaker|>``/``<|user_speaker|>`` positions in order of appearance.

        With ``speaker_at_audio_steps`` (a nano option) every audio step also gets the projected
        voice of the last ``<|speaker|>`` before it in its sample (samples start where
        ``position_ids`` restart at 0), and steps with none before them in this input (decode
        steps) that of ``step_voices`` (one 192-d vector or None per row).
        """
        layout = self.layout
        if input_ids.dim() != 2:
            raise InputError(f"input_ids must have shape [batch, length], got {tuple(input_ids.shape)}")
        embed = self.model.get_input_embeddings()
        vocab = embed.num_embeddings
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= vocab):
            raise InputError(f"input_ids hold ids outside 0..{vocab - 1}")
        x = embed(input_ids).clone()

        # 1. audio steps
        in_block = (input_ids >= layout.audio_base) & (input_ids < layout.audio_end)
        if audio_steps is not None:
            audio_steps = audio_steps.to(input_ids.device)
            if audio_steps.shape != (*input_ids.shape, NUM_CODEBOOKS):
                raise InputError(f"audio_steps must have shape {(*input_ids.shape, NUM_CODEBOOKS)}, "
                                 f"got {tuple(audio_steps.shape)}")
            bad = (audio_steps < -1) | (audio_steps >= CODEBOOK_SIZE)
            if bad.any():
                b, p, q = bad.nonzero()[0].tolist()
                raise InputError(f"audio code out of range at batch {b}, position {p}, codebook {q}: "
                                 f"{int(audio_steps[b, p, q])} (expected 0..{CODEBOOK_SIZE - 1}, or -1 for no step)")
            is_step = audio_steps[..., 0] >= 0
            partial = is_step[..., None] != (audio_steps >= 0)
            if partial.any():
                b, p, _ = partial.nonzero()[0].tolist()
                raise InputError(f"audio step at batch {b}, position {p} has some codebooks missing (-1)")
            expected = torch.where(is_step, layout.audio_base + audio_steps[..., 0], input_ids)
            if (in_block & ~is_step).any() or (expected != input_ids).any():
                b, p = ((expected != input_ids) | (in_block & ~is_step)).nonzero()[0].tolist()
                raise InputError(f"position {p} of batch {b}: input_ids must hold the codebook-0 token of the "
                                 f"audio step exactly where audio_steps has one (got id {int(input_ids[b, p])})")
            if is_step.any():
                offsets = layout.audio_base + CODEBOOK_SIZE * torch.arange(NUM_CODEBOOKS, device=input_ids.device)
                x[is_step] = embed(audio_steps[is_step] + offsets).mean(dim=1)
        elif in_block.any():
            b, p = in_block.nonzero()[0].tolist()
            raise InputError(f"input_ids hold an audio token at batch {b}, position {p} but no audio_steps were given")

        # 2. user speech
        if audio_embeds is None and audio_features is not None:
            audio_embeds = self.encode_audio(audio_features, audio_feature_lengths)
        ctx = input_ids == layout.context_of_audio
        n_ctx = int(ctx.sum())
        if audio_embeds is not None and len(audio_embeds):
            frames = torch.cat([e.to(x.device, x.dtype) for e in audio_embeds], dim=0)
            if frames.shape[0] != n_ctx:
                raise InputError(f"user speech has {frames.shape[0]} encoder frames "
                                 f"({[int(e.shape[0]) for e in audio_embeds]}) but input_ids hold {n_ctx} "
                                 f"<|context_of_audio|> placeholders")
            x[ctx] = self.project_audio(frames).to(x.dtype)
        elif n_ctx:
            raise InputError(f"input_ids hold {n_ctx} <|context_of_audio|> placeholders but no user audio was given")
        elif self.training:
            # keep every parameter in the graph (DDP needs defined gradients), as the reference does
            dummy = x.new_zeros(1, self.config.audio_encoder_output_size)
            x = x + 0.0 * self.model.audio_projection(dummy).sum()

        # 3. speaker vectors
        spk = (input_ids == layout.speaker) | (input_ids == layout.user_speaker)
        n_spk = int(spk.sum())
        vectors = _speaker_matrix(speaker_embeddings)
        if not self.config.use_speaker_embedding:
            if vectors is not None and len(vectors):
                raise InputError("speaker vectors given but this checkpoint has use_speaker_embedding = false")
        elif vectors is not None and len(vectors):
            if vectors.shape[-1] != self.config.speaker_embedding_size:
                raise InputError(f"speaker vectors must be {self.config.speaker_embedding_size}-d, "
                                 f"got {vectors.shape[-1]}")
            if vectors.shape[0] != n_spk:
                raise InputError(f"{vectors.shape[0]} speaker vectors given but input_ids hold {n_spk} "
                                 f"<|speaker|>/<|user_speaker|> placeholders")
            x[spk] = self.model.speaker_projection(vectors.to(x.device, x.dtype)).to(x.dtype)
        elif n_spk:
            raise InputError(f"input_ids hold {n_spk} <|speaker|>/<|user_speaker|> placeholders "
                             f"but no speaker vectors were given")
        elif self.training:
            dummy = x.new_zeros(1, self.config.speaker_embedding_size)
            x = x + 0.0 * self.model.speaker_projection(dummy).sum()

        # 4. the voice at every audio step (nano option)
        if self.config.speaker_at_audio_steps and audio_steps is not None and is_step.any():
            x = x + self._voice_at_steps(input_ids, is_step, x, position_ids, step_voices)
        elif step_voices is not None and not self.config.speaker_at_audio_steps:
            raise InputError("step_voices given but this checkpoint has speaker_at_audio_steps = false")
        return x

    def _voice_at_steps(self, input_ids, is_step, x, position_ids, step_voices) -> torch.Tensor:
        """What ``speaker_at_audio_steps`` adds: at each audio step, the projected vector already
        placed at the last ``<|speaker|>`` of its sample (read back from ``x``), else the row's
        ``step_voices`` entry projected, else nothing."""
        b, length = input_ids.shape
        index = torch.arange(length, device=input_ids.device).expand(b, length)
        last = torch.where(input_ids == self.layout.speaker, index, -1).cummax(dim=1).values
        if position_ids is not None:  # packed samples: a voice holds within its own sample only
            start = torch.where(position_ids.to(index.device) == 0, index, 0).cummax(dim=1).values
            last = torch.where(last >= start, last, -1)
        voice = x.gather(1, last.clamp(min=0)[..., None].expand(-1, -1, x.shape[-1]))
        add = torch.where((is_step & (last >= 0))[..., None], voice, 0.0)
        if step_voices is None:
            return add
        if len(step_voices) != b:
            raise InputError(f"step_voices has {len(step_voices)} entries for a batch of {b}")
        rows = [i for i, v in enumerate(step_voices) if v is not None]
        if not rows:
            return add
        vectors = torch.stack([torch.as_tensor(step_voices[i]).reshape(-1) for i in rows])
        if vectors.shape[-1] != self.config.speaker_embedding_size:
            raise InputError(f"step_voices must be {self.config.speaker_embedding_size}-d, got {vectors.shape[-1]}")
        fallback = x.new_zeros(b, x.shape[-1])
        fallback[rows] = self.model.speaker_projection(vectors.to(x.device, x.dtype)).to(x.dtype)
        return add + torch.where((is_step & (last < 0))[..., None], fallback[:, None, :], 0.0)

    # -- forward ------------------------------------------------------------------
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        if self.audio_heads is not None:
            first = self.layout.first_audio_token_id
            parts = [logits[..., :first]] + [head(hidden) for head in self.audio_heads] + \
                    [logits[..., first + AUDIO_BLOCK:]]
            logits = torch.cat(parts, dim=-1)
        return logits

    def loss_sums(self, hidden: torch.Tensor, labels: torch.Tensor, audio_labels: torch.Tensor | None) -> LossSums:
        """The hybrid loss's sums (``hybrid_loss_sums``) with logits computed only where the
        loss reads them: the text softmax's columns at positions followed by a text label, the
        codebook 1-7 columns at positions followed by an audio step. A training pack is mostly
        unlabelled (user speech, prompts) and text rows need a fifth of the vocabulary, so this
        skips most of the output layer's work (bench/loss_rows.py)."""
        first = self.layout.first_audio_token_id
        text_rows, text_targets, audio_rows, audio_targets = loss_rows(labels, audio_labels, first)
        rows = hidden[:, :-1]
        weight = self.lm_head.weight
        text_hidden = rows[text_rows]
        # two products, not one with the weight rows concatenated: that would copy the (official:
        # 150k-row) text block of the weight every step
        text_logits = torch.cat([F.linear(text_hidden, weight[:first]),
                                 F.linear(text_hidden, weight[first + AUDIO_BLOCK:])], dim=-1)
        audio_hidden = rows[audio_rows]
        if self.audio_heads is not None:
            audio_logits = torch.cat([head(audio_hidden) for head in self.audio_heads], dim=-1)
        else:
            audio_logits = F.linear(audio_hidden, weight[first:first + AUDIO_BLOCK])
        return loss_sums_at_rows(text_logits, text_targets, audio_logits, audio_targets)

    def forward(self, input_ids: torch.Tensor, attention_mask=None, position_ids=None, audio_steps=None,
                audio_features=None, audio_feature_lengths=None, audio_embeds=None, speaker_embeddings=None,
                labels=None, audio_labels=None, cache=None, use_cache: bool = False, num_items_in_batch=None,
                logits_to_keep: int = 0, return_loss_sums: bool = False, step_voices=None) -> QinYuOutput:
        """Run the hybrid LM. With ``labels`` (and ``audio_labels`` [B, L, 8]) the hybrid
        loss is returned; ``logits_to_keep`` > 0 computes logits for the last positions
        only (decoding). ``return_loss_sums`` (training, with ``labels``): only the loss's
        unnormalised sums (``loss_sums``), no logits, so a trainer can normalise over a
        batch split into micro-batches and processes. ``step_voices`` (``speaker_at_audio_steps``
        checkpoints): each row's assistant voice for audio steps fed without their prompt."""
        past = cache.get_seq_length() if cache is not None else 0
        limit = self.config.max_positions
        if limit is not None and past + input_ids.shape[1] > limit:
            raise InputError(f"sequence of {past + input_ids.shape[1]} positions is longer than the backbone's "
                             f"maximum of {limit} (max_position_embeddings)")
        x = self.embed_inputs(input_ids, audio_steps, audio_features, audio_feature_lengths, audio_embeds,
                              speaker_embeddings, position_ids=position_ids, step_voices=step_voices)
        out = self.model(inputs_embeds=x, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=use_cache)
        hidden = out.last_hidden_state
        if return_loss_sums:
            if labels is None:
                raise InputError("return_loss_sums needs labels")
            return QinYuOutput(logits=None, hidden_states=hidden,
                               loss_sums=self.loss_sums(hidden, labels, audio_labels))
        logits = self.compute_logits(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        result = QinYuOutput(logits=logits, hidden_states=hidden, cache=out.cache if use_cache else None)
        if labels is not None:
            if logits_to_keep:
                raise InputError("labels need logits for every position; do not set logits_to_keep")
            losses = hybrid_loss(logits, labels, audio_labels, self.layout.first_audio_token_id, num_items_in_batch)
            result.loss, result.text_loss = losses.loss, losses.text_loss
            result.audio_loss, result.audio_loss_per_codebook = losses.audio_loss, losses.audio_loss_per_codebook
        return result

    # -- checkpoints --------------------------------------------------------------
    def save_pretrained(self, directory, tokenizer=None) -> Path:
        """Write ``config.json``, ``model.safetensors`` (and ``tokenizer.json``), each
        atomically (temporary file, then rename)."""
        directory = Path(directory)
        state = {k: v.detach() for k, v in self.state_dict().items()}
        if self.tied:
            state.pop("lm_head.weight", None)
        save_weights(directory, [state])
        self.config.save(directory / CONFIG_NAME)
        if tokenizer is not None:
            tmp = directory / (TOKENIZER_NAME + ".tmp")
            tokenizer.save(str(tmp))
            tmp.replace(directory / TOKENIZER_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory, dtype: torch.dtype | None = None, device=None,
                        attn_implementation: str | None = None) -> "QinYuForConditionalGeneration":
        """Load a qinyu checkpoint or an official VITA-QinYu folder.

        The model is built on the meta device and the weights are assigned file by file,
        so memory holds one copy of the model. ``dtype`` None keeps the stored dtype."""
        folder = open_checkpoint(directory)
        if attn_implementation:
            folder.config.attn_implementation = attn_implementation
        with torch.device("meta"):
            model = cls(folder.config)
        model.load_weights(folder, dtype=dtype)
        model.eval()
        if device is not None:
            model.to(device)
        return model

    def load_weights(self, folder: CheckpointFolder, dtype: torch.dtype | None = None) -> None:
        expected = {k: v.shape for k, v in self.state_dict().items()}
        if self.tied:
            expected.pop("lm_head.weight")
        seen: set[str] = set()
        for f, tensors in folder.iter_weights():
            check_tensors(expected, tensors, f, seen)
            if dtype is not None:
                tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
            self.load_state_dict(tensors, strict=False, assign=True)
        check_complete(expected, seen, folder.directory)
        if self.tied:
            self.lm_head.weight = self.model.get_input_embeddings().weight
        self._materialize_buffers()

    def _materialize_buffers(self) -> None:
        """Non-persistent buffers (the rotary frequencies) are not in checkpoints; after
        a meta-device build they are recomputed from the backbone config."""
        rotary = getattr(self.model, "rotary_emb", None)
        if rotary is not None and any(b.is_meta for b in rotary.buffers()):
            self.model.rotary_emb = rotary.__class__(config=self.model.config).to(self.device)
        left = [n for n, t in list(self.named_parameters()) + list(self.named_buffers()) if t.is_meta]
        if left:
            raise CheckpointError(f"tensors left uninitialised after loading: {left[:5]}")


def _speaker_matrix(speaker_embeddings):
    if speaker_embeddings is None:
        return None
    if isinstance(speaker_embeddings, (list, tuple)):
        parts = [torch.as_tensor(s).reshape(-1, torch.as_tensor(s).shape[-1]) for s in speaker_embeddings if len(s)]
        return torch.cat(parts) if parts else None
    if speaker_embeddings.dim() == 3:
        return speaker_embeddings.reshape(-1, speaker_embeddings.shape[-1])
    if speaker_embeddings.dim() == 1:
        return speaker_embeddings[None]
    return speaker_embeddings
