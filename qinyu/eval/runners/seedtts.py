"""Seed-TTS eval (paper Table 7): the model speaks each target text with its TTS prompt
("Convert the text to speech.\\n{text}"); the speech is transcribed by a configured
recogniser and scored as WER (en) / CER (zh), mean of per-utterance rates x 100.

Data (``--data``): a list file (``meta.lst``, ``hardcase.lst``), a folder holding
``meta.lst``, or the test-set root holding ``en/meta.lst``, ``zh/meta.lst`` and
``zh/hardcase.lst`` (each list is one subset). A line is
``utt|prompt_text|prompt_wav|target_text[|gt_wav]``, paths relative to the list's folder.
When the checkpoint has a speaker encoder, the prompt wav's speaker vector is the voice
(the system line "Your Voice Embedding: <|speaker|>"); otherwise the prompt wav is only
checked to exist and the model speaks in its default voice.

Outputs: ``{out}/{subset}/{utt}.wav`` (subset ``en``, ``zh``, ``zh-hardcase``, ...: each
folder is the layout Seed-TTS's ``cal_wer.sh`` reads), ``items.jsonl``.
The protocol's recognisers are Whisper-large-v3 (en, language forced to English) and
FunASR paraformer-zh (zh); neither ships here, so ``--asr`` must name one (``--asr slm``
uses the model's own ASR prompt and says so in the scorer column). Speaker similarity
(WavLM-large ECAPA) is not computed.
"""

from __future__ import annotations

from pathlib import Path

from .base import (Item, ItemStore, Run, RunnerError, atomic_write_wav, mostly_chinese, reason, safe_name,
                   score_row)

PROTOCOL_ASR = {"en": "Whisper-large-v3 (openai/whisper-large-v3, language forced to English)",
                "zh": "FunASR paraformer-zh (+ zhconv to simplified)"}


def find_lists(data: Path) -> list[tuple[str, Path]]:
    """(subset name, list file) pairs."""
    if data.is_file():
        return [(_subset_name(data), data)]
    if (data / "meta.lst").is_file():
        return [(_subset_name(data / "meta.lst"), data / "meta.lst")]
    found = [(_subset_name(p), p) for p in (data / "en" / "meta.lst", data / "zh" / "meta.lst",
                                              data / "zh" / "hardcase.lst") if p.is_file()]
    if not found:
        raise RunnerError(f"{data}: no Seed-TTS list found (expected meta.lst, or en/meta.lst, zh/meta.lst, "
                          f"zh/hardcase.lst under it)")
    return found


def _subset_name(lst: Path) -> str:
    folder = lst.parent.name or "seedtts"
    return folder if lst.stem == "meta" else f"{folder}-{lst.stem}"


def load_list(subset: str, lst: Path) -> list[Item]:
    items, seen = [], set()
    for n, line in enumerate(lst.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("|")
        if len(fields) not in (4, 5) or not fields[0].strip() or not fields[3].strip():
            items.append(Item(f"{subset}/line{n}", error=f"{lst.name} line {n}: expected "
                              f"utt|prompt_text|prompt_wav|target_text[|gt_wav], got {len(fields)} field(s)"
                              + ("" if len(fields) in (4, 5) else f": {line.strip()[:80]!r}")))
            continue
        utt, prompt_text, prompt_wav, target = (f.strip() for f in fields[:4])
        key = f"{subset}/{utt}"
        if key in seen:
            items.append(Item(f"{subset}/line{n}", error=f"{lst.name} line {n}: utterance {utt!r} listed twice"))
            continue
        seen.add(key)
        wav = Path(prompt_wav) if Path(prompt_wav).is_absolute() else lst.parent / prompt_wav
        error = None if wav.is_file() else f"{lst.name} line {n}: prompt wav not found: {wav}"
        items.append(Item(key, {"subset": subset, "utt": utt, "prompt_text": prompt_text, "prompt_wav": str(wav),
                                "target": target}, error))
    return items


def run(r: Run) -> list[dict]:
    from ...audio.io import load_audio
    from ...engine.session import Persona
    from ...layout import TTS_PROMPT
    from ...layout.chat import VOICE_LINE
    from ..metrics.wer import error_rate
    from ..normalize import get_normaliser

    lists = r.select_subsets(find_lists(r.data))
    subsets = {s: r.limited(load_list(s, p)) for s, p in lists}
    langs = {s: _language(s, items) for s, items in subsets.items()}
    # the recognisers are resolved before generating: a missing scorer stops the run at once
    recognisers = {s: r.recogniser(lang, PROTOCOL_ASR[lang], whisper_language="english" if lang == "en" else None)
                   for s, lang in langs.items()}
    model = r.model
    if model.codec is None:
        raise RunnerError(f"{r.options.model}/config.json names no codec (field 'codec'): this checkpoint cannot "
                          f"speak, and Seed-TTS scores speech")
    store = ItemStore(r.out)

    def build(it, j, replies, state):
        prompt = TTS_PROMPT  # user_turn fills in {text}
        if model.speaker_encoder is not None:  # voice cloning: the prompt speaker's vector is the voice
            try:
                voice = model.speaker_encoder.embed(*load_audio(it.data["prompt_wav"]))
            except Exception as e:
                raise RuntimeError(f"speaker vector of {it.data['prompt_wav']}: {e}") from None
            session = model.session(Persona(system=VOICE_LINE, voice=voice))
            return session.request(session.user_turn(text=it.data["target"], prompt=prompt), with_history=False)
        session = model.session()
        return session.request(session.user_turn(text=it.data["target"], prompt=prompt), with_history=False,
                               with_persona=False)

    def save(it, replies):
        rel = f"{safe_name(it.data['subset'])}/{safe_name(it.data['utt'])}.wav"
        atomic_write_wav(r.out / rel, replies[0].audio, replies[0].sample_rate)
        return {"target": it.data["target"], "text": replies[0].text, "finished": replies[0].finished,
                "speaker_prompt": model.speaker_encoder is not None, "outputs": [rel]}

    rows = []
    for subset, items in subsets.items():
        records = r.generate(items, store, lambda it: 1, build, save, desc=f"seedtts {subset}")
        ok = [it.key for it in items if records[it.key]["status"] == "ok"]
        recogniser = recognisers[subset]
        hyps = r.transcribe_replies(recogniser, {k: r.out / records[k]["outputs"][0] for k in ok})
        for k in ok:
            if isinstance(hyps[k], Exception):
                records[k] = {**records[k], "status": "failed", "reason": f"ASR of the speech: {reason(hyps[k])}"}
        scored = [k for k in ok if records[k]["status"] == "ok"]
        normaliser = get_normaliser(r.options.normaliser or f"seedtts-{langs[subset]}")
        metric = "CER (%)" if langs[subset] == "zh" else "WER (%)"
        rate = {}
        if scored:
            er = error_rate([records[k]["target"] for k in scored], [hyps[k] for k in scored], normaliser.name,
                            "utterance")
            rate = dict(zip(scored, er.per_item))
            value, n = 100 * er.value, er.n
        else:
            value, n = None, 0
        rows.append(score_row("seedtts", metric, value, n, len(items) - len(scored), subset=subset,
                              normaliser=normaliser.label, aggregation="utterance (mean of per-utterance rates)",
                              scorer=recogniser.name))
        r.items += [{"key": it.key, "status": records[it.key]["status"], "reason": records[it.key].get("reason"),
                     "target": records[it.key].get("target"), "asr": None if isinstance(hyps.get(it.key), Exception)
                     else hyps.get(it.key), "rate": rate.get(it.key)} for it in items]
    return rows


def _language(subset: str, items: list[Item]) -> str:
    head = subset.split("-")[0]
    if head in ("en", "zh"):
        return head
    return "zh" if mostly_chinese(it.data.get("target", "") for it in items) else "en"
