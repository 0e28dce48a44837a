"""Training-data synthesis: the paper's conversation, role-play and singing pipelines.

Backends (chosen by configuration, same code path at every scale):
- text: ``llm.OpenAIChat`` (any OpenAI-compatible server) or ``llm.TemplateBackend``
  (rules in ``templates.py``, offline, deterministic);
- speech: ``tts.EspeakTTS`` (English, and Mandarin via pypinyin) or ``tts.HTTPInstructTTS``;
- singing: ``svs.Singer`` (espeak-ng syllables moved onto notes with Praat PSOLA).

Pipelines: ``conversation.py``, ``roleplay.py``, ``singing.py``; ``job.py`` runs any of
them as a resumable, sharded job with a manifest; ``cli.py`` is ``qinyu data synth``.
See docs/synthesis.md.
"""
