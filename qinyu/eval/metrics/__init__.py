"""Metrics: WER/CER (``wer``), speaker similarity (``speaker``), pitch contours (``pitch``),
MOS predictors (``mos``). Each module imports its own libraries when it is imported."""
