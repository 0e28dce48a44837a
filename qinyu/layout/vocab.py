"""The qinyu vocabulary: which tokens the reference adds to a base text tokenizer, in
which order, and how to resolve their ids.

Ids are never hard-coded. They depend on the base tokenizer (151,669 entries for
Qwen3, 128,256 for Youtu, a few hundred for nano), so every id is resolved by string
from the tokenizer that ships with a checkpoint. The audio block is contiguous:
``id(<|audio_q_c|>) = id(<|audio_0_0|>) + 1032 * q + c``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

NUM_CODEBOOKS = 8
NUM_CODES = 1024  # real codec codes per codebook
NUM_PADS = 8  # <|audio_q_k_pad|>, k = 0..7 (only 0..6 are produced, as delay pads)
CODEBOOK_SIZE = NUM_CODES + NUM_PADS  # 1032 rows per codebook in the vocabulary

# Added first by the reference (inherited from VITA's vision tokens; unused here, but
# they occupy ids and so must be added to keep the layout identical).
VISION_SPECIAL_TOKENS = [
    "<|begin_of_image|>", "<|end_of_image|>", "<|context_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>", "<|context_of_video|>",
    "<|begin_of_patch|>", "<|end_of_patch|>", "<|context_of_patch|>",
    "<|begin_of_quad|>", "<|end_of_quad|>",
    "<|begin_of_ref|>", "<|end_of_ref|>",
    "<|begin_of_box|>", "<|end_of_box|>",
    "<|image|>", "<|video|>",
]

BEGIN_OF_AUDIO = "<|begin_of_audio|>"
END_OF_AUDIO = "<|end_of_audio|>"
CONTEXT_OF_AUDIO = "<|context_of_audio|>"  # one per user-speech encoder frame
AUDIO_TAG = "<|audio|>"  # placeholder in message text, expanded by the renderer
END_OF_CONV = "<|end_of_conv|>"  # end of the assistant's text stream
AUDIO_SPECIAL_TOKENS = [BEGIN_OF_AUDIO, END_OF_AUDIO, CONTEXT_OF_AUDIO, AUDIO_TAG, END_OF_CONV]

SPEAKER = "<|speaker|>"  # assistant voice vector (system prompt)
USER_SPEAKER = "<|user_speaker|>"  # voice vector of each user utterance
FUNCTION_START = "<function="
FUNCTION_END = "</function>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
# Added after the audio block. <|audio_token_start|>/<|audio_token_end|> are never used
# by the reference but take ids; <|im_end|> already exists in Qwen-style bases.
TAIL_SPECIAL_TOKENS = [
    "<|audio_token_start|>", "<|audio_token_end|>", FUNCTION_START, FUNCTION_END,
    SPEAKER, USER_SPEAKER, IM_END,
]


def audio_token(q: int, c: int) -> str:
    """String of codebook ``q``'s entry ``c`` (c < 1024 a code, 1024 + k pad k)."""
    if c < NUM_CODES:
        return f"<|audio_{q}_{c}|>"
    return f"<|audio_{q}_{c - NUM_CODES}_pad|>"


def audio_token_strings() -> list[str]:
    """The 8 x 1032 audio tokens, codebook-major, codes then pads."""
    return [audio_token(q, c) for q in range(NUM_CODEBOOKS) for c in range(CODEBOOK_SIZE)]


def extend_tokenizer(tokenizer):
    """Add the qinyu tokens to a ``tokenizers.Tokenizer`` in the reference order.

    Tokens that already exist keep their ids (as ``add_tokens`` does in the reference).
    Audio tokens are added as *non-special*, so ``decode(skip_special_tokens=True)``
    keeps them, exactly like the reference. Returns the same tokenizer.
    """
    from tokenizers import AddedToken

    def special(tokens):
        return [AddedToken(t, special=True, normalized=False) for t in tokens]

    tokenizer.add_special_tokens(special(VISION_SPECIAL_TOKENS))
    tokenizer.add_special_tokens(special(AUDIO_SPECIAL_TOKENS))
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in audio_token_strings()])
    tokenizer.add_special_tokens(special(TAIL_SPECIAL_TOKENS))
    return tokenizer


def padded_vocab_size(num_tokens: int, multiple: int = 8) -> int:
    """Embedding rows: the tokenizer size rounded up like ``pad_to_multiple_of=8``."""
    return -(-num_tokens // multiple) * multiple


class VocabularyError(ValueError):
    pass


@dataclass(frozen=True)
class TokenLayout:
    """Resolved ids of every token the hybrid sequence uses.

    Build it with :meth:`from_tokenizer`; it is stored in a checkpoint's config so the
    model can run without the tokenizer, and checked against the tokenizer on load.
    """

    audio_base: int  # id(<|audio_0_0|>)
    begin_of_audio: int
    end_of_audio: int
    context_of_audio: int
    audio_tag: int
    end_of_conv: int
    speaker: int
    user_speaker: int
    im_start: int
    im_end: int
    function_start: int
    function_end: int
    num_tokens: int  # entries in the tokenizer
    vocab_size: int  # embedding rows (num_tokens padded to a multiple of 8)

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_tokenizer(cls, tokenizer) -> "TokenLayout":
        def tid(token: str) -> int:
            i = tokenizer.token_to_id(token)
            if i is None:
                raise VocabularyError(
                    f"token {token!r} is missing from the tokenizer; "
                    "extend it with qinyu.layout.extend_tokenizer first"
                )
            return i

        base = tid(audio_token(0, 0))
        # The whole audio block must be contiguous and codebook-major.
        for q in range(NUM_CODEBOOKS):
            for c in (0, NUM_CODES - 1, NUM_CODES, CODEBOOK_SIZE - 1):
                if tid(audio_token(q, c)) != base + CODEBOOK_SIZE * q + c:
                    raise VocabularyError(
                        f"audio token {audio_token(q, c)!r} has id {tid(audio_token(q, c))}, "
                        f"expected {base + CODEBOOK_SIZE * q + c} (audio block must be contiguous)"
                    )
        num_tokens = tokenizer.get_vocab_size(with_added_tokens=True)
        return cls(
            audio_base=base,
            begin_of_audio=tid(BEGIN_OF_AUDIO),
            end_of_audio=tid(END_OF_AUDIO),
            context_of_audio=tid(CONTEXT_OF_AUDIO),
            audio_tag=tid(AUDIO_TAG),
            end_of_conv=tid(END_OF_CONV),
            speaker=tid(SPEAKER),
            user_speaker=tid(USER_SPEAKER),
            im_start=tid(IM_START),
            im_end=tid(IM_END),
            function_start=tid(FUNCTION_START),
            function_end=tid(FUNCTION_END),
            num_tokens=num_tokens,
            vocab_size=padded_vocab_size(num_tokens),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TokenLayout":
        names = set(cls.__dataclass_fields__)
        unknown = set(d) - names
        missing = names - set(d)
        if unknown or missing:
            raise VocabularyError(
                f"token layout: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}"
            )
        return cls(**{k: int(v) for k, v in d.items()})

    # -- audio ids ----------------------------------------------------------------
    def audio_token_id(self, q: int, c: int) -> int:
        if not (0 <= q < NUM_CODEBOOKS and 0 <= c < CODEBOOK_SIZE):
            raise VocabularyError(f"audio token (q={q}, c={c}) out of range (q<8, c<1032)")
        return self.audio_base + CODEBOOK_SIZE * q + c

    @property
    def audio_end(self) -> int:
        """One past the last audio token id (<|audio_7_7_pad|> + 1)."""
        return self.audio_base + NUM_CODEBOOKS * CODEBOOK_SIZE

    @property
    def first_audio_token_id(self) -> int:
        """id(<|audio_1_0|>): the reference's ``text_vocab_size`` in the loss."""
        return self.audio_base + CODEBOOK_SIZE

    def is_codebook0(self, token_id: int) -> bool:
        return self.audio_base <= token_id < self.audio_base + CODEBOOK_SIZE

    def is_audio(self, token_id: int) -> bool:
        return self.audio_base <= token_id < self.audio_end
