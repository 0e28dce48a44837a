"""Evaluation harness: the VITA-QinYu paper's benchmarks, metrics and score arithmetic.

- ``normalize``: the named text normalisers WER/CER numbers are computed under
  (Seed-TTS, URO-Bench, WeNet); every reported error rate names its normaliser.
- ``metrics``: WER/CER (``wer``), speaker similarity (``speaker``), pitch-contour
  MSE/DTW (``pitch``) and MOS predictors loaded from local folders (``mos``).
- ``judge``: an OpenAI-compatible LLM judge client with a response cache, and the
  verdict parsers of C3 and URO-Bench.
- ``scores``: the benchmarks' and the paper's score arithmetic (x20 rescale, averages).
- ``runners``, ``report``, ``cli``: benchmark loaders/runners, reports, ``qinyu eval``.

Importing this package loads nothing heavy; each module imports its own libraries.
"""
