"""qinyu-nano: the whole recipe at laptop scale.

- ``corpus.py``: the nano corpus (spoken closed-domain QA with ASR and TTS pairs,
  role-play in eight described voices, singing of six public-domain songs) built with
  the synthesis pipelines of ``qinyu.data.synth`` offline (template backend, espeak-ng,
  the PSOLA singer), with an explicit held-out split; ``qinyu data nano-corpus``.
- ``evaluate.py``: the held-out evaluation (QA accuracy, ASR CER, intelligibility with
  its codec upper bound, role-play voice match, singing pitch accuracy) and its report;
  ``qinyu eval nano``.

See docs/nano.md.
"""

DEFAULT_CORPUS = "runs/nano/corpus"  # where `qinyu data nano-corpus` writes and `qinyu eval nano` reads
