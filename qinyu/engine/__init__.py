"""Batched, streaming generation over the hybrid LM, sessions, and task prompts."""

from .engine import Engine, EngineError, Request, Result, StepOutput, generate
from .sampling import SamplingParams

__all__ = [name for name in dir() if not name.startswith("_")]
