"""ASR test sets (paper Table 6): the model transcribes with its own ASR prompt
("Convert the speech to text."), scored as WER/CER.

Data (``--data``): a Kaldi-style folder with ``wav.scp`` (``UTT PATH`` per line, a
relative path is taken from the folder) and ``text`` (``UTT TRANSCRIPT``), or a JSONL
manifest file with one ``{"id", "audio", "text"}`` object per line (``audio`` relative
to the manifest). Kaldi pipe entries (``cmd |``) are not run: such items fail with the
reason. Scoring: ``--normaliser`` (default ``wenet``, the VITA-Audio/WeNet
``compute-wer.py`` rules) with corpus-level aggregation for ``wenet`` (total errors /
total reference units, as that script) and per-utterance mean otherwise.
Outputs: ``hyp.txt`` / ``ref.txt`` (``UTT TEXT`` lines, the compute-wer input format),
``items.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Item, ItemStore, Run, RunnerError, atomic_write_text, mostly_chinese, score_row


AGGREGATION = {"corpus": "corpus: total errors / total reference units (as WeNet compute-wer)",
               "utterance": "mean of per-utterance rates"}


def load_items(data: Path) -> list[Item]:
    if data.is_dir():
        if not (data / "wav.scp").is_file():
            raise RunnerError(f"{data} is not a Kaldi-style test folder: wav.scp is missing (expected wav.scp and "
                              f"text), and it is not a .jsonl manifest")
        return load_kaldi(data)
    if data.suffix == ".jsonl":
        return load_manifest(data)
    raise RunnerError(f"--data {data}: expected a Kaldi-style folder (wav.scp + text) or a .jsonl manifest")


def load_kaldi(folder: Path) -> list[Item]:
    text_path = folder / "text"
    if not text_path.is_file():
        raise RunnerError(f"{folder}: the transcript file 'text' is missing (Kaldi layout: wav.scp + text)")
    refs: dict[str, str] = {}
    for n, line in enumerate(text_path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            utt, _, ref = line.strip().partition(" ")
            refs[utt] = ref.strip()
    items, seen = [], set()
    for n, line in enumerate((folder / "wav.scp").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            items.append(Item(f"wav.scp:{n}", error=f"wav.scp line {n}: expected 'UTT PATH', got {line.strip()!r}"))
            continue
        utt, path = parts
        if utt in seen:
            items.append(Item(f"wav.scp:{n}", error=f"wav.scp line {n}: utterance {utt!r} listed twice"))
            continue
        seen.add(utt)
        error = None
        if path.rstrip().endswith("|"):
            error = f"wav.scp line {n}: {utt} is a pipe command ({path!r}); extract the audio to files first"
        elif utt not in refs:
            error = f"{utt}: no transcript in {text_path}"
        audio = Path(path) if Path(path).is_absolute() else folder / path
        items.append(Item(utt, {"audio": str(audio), "ref": refs.get(utt, "")}, error))
    for utt in refs.keys() - seen:
        items.append(Item(utt, error=f"{utt}: transcript in {text_path} but no audio in wav.scp"))
    return items


def load_manifest(path: Path) -> list[Item]:
    items, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            items.append(Item(f"line{n}", error=f"{path.name} line {n}: malformed JSON ({e})"))
            continue
        missing = [k for k in ("id", "audio", "text") if not isinstance(row.get(k), str)]
        key = str(row.get("id") or f"line{n}")
        if missing:
            items.append(Item(key, error=f"{path.name} line {n}: field(s) {', '.join(missing)} missing or not a string"))
            continue
        if key in seen:
            items.append(Item(f"line{n}", error=f"{path.name} line {n}: id {key!r} listed twice"))
            continue
        seen.add(key)
        audio = Path(row["audio"]) if Path(row["audio"]).is_absolute() else path.parent / row["audio"]
        items.append(Item(key, {"audio": str(audio), "ref": row["text"]}))
    return items


def run(r: Run) -> list[dict]:
    from ...layout import ASR_PROMPT
    from ..metrics.wer import error_rate
    from ..normalize import get_normaliser

    normaliser = get_normaliser(r.options.normaliser or "wenet")  # fails early on an unknown name
    aggregate = "corpus" if normaliser.name == "wenet" else "utterance"
    items = r.limited(load_items(r.data))
    if not items:
        raise RunnerError(f"no utterances in {r.data}")
    store = ItemStore(r.out)
    model = r.model
    session = model.session()

    def build(it, j, replies, state):
        turn = model.audio_turn(session, Path(it.data["audio"]), prompt=ASR_PROMPT)
        return session.request(turn, with_history=False, with_persona=False)

    def save(it, replies):
        return {"ref": it.data["ref"], "hyp": replies[0].text.strip(), "finished": replies[0].finished,
                "steps": replies[0].steps, "outputs": []}

    records = r.generate(items, store, lambda it: 1, build, save, desc="asr")
    ok = [it.key for it in items if records[it.key]["status"] == "ok"]
    failed = len(items) - len(ok)
    rows = []
    if ok:
        er = error_rate([records[k]["ref"] for k in ok], [records[k]["hyp"] for k in ok], normaliser.name, aggregate)
        rate = dict(zip(ok, er.per_item))
        # CER for Chinese, WER for English (the paper's Table 6); WeNet's "char" unit keeps English words whole
        metric = "CER (%)" if mostly_chinese(records[k]["ref"] for k in ok) else "WER (%)"
        rows.append(score_row("asr", metric, 100 * er.value, er.n, failed, subset=r.data.name,
                              normaliser=normaliser.label, aggregation=AGGREGATION[er.aggregate], scorer=None))
    else:
        rate = {}
        rows.append(score_row("asr", "WER/CER (%)", None, 0, failed, subset=r.data.name, normaliser=normaliser.label,
                              aggregation=AGGREGATION[aggregate]))
    _write_kaldi(r.out / "hyp.txt", [(k, records[k]["hyp"]) for k in ok])
    _write_kaldi(r.out / "ref.txt", [(k, records[k]["ref"]) for k in ok])
    r.items = [{"key": it.key, "status": records[it.key]["status"], "reason": records[it.key].get("reason"),
                "ref": it.data.get("ref"), "hyp": records[it.key].get("hyp"), "rate": rate.get(it.key)}
               for it in items]
    return rows


def _write_kaldi(path: Path, rows: list[tuple[str, str]]) -> None:
    atomic_write_text(path, "".join(f"{k} {t}\n" for k, t in rows))
