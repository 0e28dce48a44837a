"""The hybrid text + audio sequence: vocabulary, delay pattern, interleave, chat
rendering and labels. Pure functions over numpy and ``tokenizers``; no torch."""

from .chat import (
    ASR_PROMPT, IGNORE_INDEX, TTS_PROMPT, AssistantSpeech, RenderedSequence, RenderError, UserSpeech,
    asr_messages, drop_assistant_speech, render, system_prompt, tts_messages, user_speech_frames,
    with_voice_prompt,
)
from .delay import MAX_DELAY, DelayError, apply_delay, check_codes, undo_delay
from .interleave import DEFAULT_SCHEDULE, ScheduleError, check_schedule, deinterleave, interleave
from .tokenizer import bpe_tokenizer, byte_tokenizer, load_tokenizer, qwen3_shaped_tokenizer
from .vocab import (
    CODEBOOK_SIZE, NUM_CODEBOOKS, NUM_CODES, TokenLayout, VocabularyError, audio_token, extend_tokenizer,
)

__all__ = [name for name in dir() if not name.startswith("_")]
