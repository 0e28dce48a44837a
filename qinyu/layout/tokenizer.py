"""Text tokenizers built locally (nothing is downloaded).

* :func:`byte_tokenizer` — byte-level, 256 base tokens plus Qwen-style ChatML
  specials; handles any UTF-8 text. The text tokenizer of untrained tiny checkpoints.
* :func:`bpe_tokenizer` — a byte-level BPE trained on a corpus's own text (qinyu-nano:
  a few hundred merges make the system prompts and replies ~2x shorter than bytes).
* :func:`qwen3_shaped_tokenizer` — a stand-in with Qwen3's 151,669-entry base layout
  (its specials at their real ids), for checking that the extended ids match the
  official 8B layout without having Qwen3's files.

Both come back already extended with the qinyu vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from .vocab import ENDOFTEXT, IM_END, IM_START, extend_tokenizer

# Qwen3's added tokens, in id order from 151643 (the base BPE has 151,643 entries).
QWEN3_ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]
QWEN3_BASE_BPE_SIZE = 151643


def byte_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (ENDOFTEXT, IM_START, IM_END)])
    return extend_tokenizer(tok)


def bpe_tokenizer(texts, vocab_size: int = 512, whole_words=()):
    """A byte-level BPE with ``vocab_size`` base entries (all 256 bytes plus merges learned
    from ``texts``), Qwen's pre-tokenisation and ChatML specials, extended like
    :func:`byte_tokenizer`. Deterministic for the same texts.

    ``whole_words`` must each come out as one token after a space (" fifteen"), as a large
    vocabulary like Qwen3's has them: a line of them is added to the training text, 100, 200,
    400... times until the merges make every one whole (ValueError if 1,600 times do not)."""
    texts = list(texts)
    words = [w.strip() for w in whole_words if w.strip()]
    repeats = 0
    while True:
        tok = _train_bpe(texts + ["".join(" " + w for w in words)] * repeats, vocab_size)
        split = [w for w in words if len(tok.encode(" " + w).ids) > 1]
        if not split:
            return tok
        if repeats >= 1600:
            raise ValueError(f"{len(split)} of the whole words stay split in a BPE of {vocab_size} entries "
                             f"(e.g. {split[0]!r}); use a larger vocabulary")
        repeats = max(100, 2 * repeats)


def _train_bpe(texts: list[str], vocab_size: int):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet):
        raise ValueError(f"vocab_size must be at least {len(alphabet)} (the byte alphabet), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False,
                                  special_tokens=[])
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (ENDOFTEXT, IM_START, IM_END)])
    return extend_tokenizer(tok)


def qwen3_shaped_tokenizer():
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(QWEN3_BASE_BPE_SIZE)}
    vocab["[UNK]"] = 0
    vocab.pop("t0")
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN3_ADDED_TOKENS])
    return extend_tokenizer(tok)


def load_tokenizer(path):
    """Load ``tokenizer.json`` from a file or a checkpoint folder."""
    from tokenizers import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {file}")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
        raise ValueError(f"cannot read tokenizer {file}: {e}") from None
