"""URO-Bench, Basic track (paper Table 5): spoken instructions answered with speech; the
answer is judged on an ASR transcript of the speech reply (URO's "eval_with_asr"), or
with ``--judge-text`` on the model's text reply (URO's non-ASR variant).

Data (``--data``): the URO-Bench data root (holding ``basic/``), the ``basic`` folder, or
one dataset folder; each dataset is ``{Dataset}/test.jsonl`` with ``source_wav``
(relative to the jsonl), ``source_text`` and, where the mode needs it, ``target_text``
(a string, or a list joined with " / "). Only the 20 Basic-track sets in ``DATASETS`` are
run (the table is URO's ``scripts/config.sh`` / ``evaluate.py``); others are skipped and
listed in the report notes.

Outputs per dataset (URO's inference layout): ``{out}/{Dataset}/audio/{i:04d}.wav``,
``pred_text.jsonl`` / ``question_text.jsonl`` / ``gt_text.jsonl`` / ``asr_text.jsonl``
(one ``{"0000": text}`` per line, every line of test.jsonl, "" where an item failed).

Judge prompts (``--judge-prompts FILE``): URO-Bench's prompts are not shipped here; the
user fills a JSON object from URO-Bench's ``metrics/mark_gpt.py`` (docs/eval.md):
``system`` (the system message), ``open``, ``semi-open``, ``qa`` (one template per
judged mode). Placeholders ``{question}``, ``{answer}`` (open) and ``{reference}``
(semi-open, qa) are filled by plain text replacement in that order, as mark_gpt.py
does, so other braces need no escaping; any other ``{name}`` is an error. Only the keys
of the modes being run are required; all are checked before generating, and the file's
name and sha256 prefix go in the report's judge column.

Scoring (URO's ``mark.py``): modes open / semi-open (1-5 from the judge, mean x 20) and
qa ("Yes" = 1, mean x 100) with gpt-4o-mini's settings (3 samples, temperature 0.5,
top_p 0.95, max_tokens 1024, the file's system message); an empty answer is scored 0
without asking, as URO does. Repeat (mode wer): per-item WER under
``uro-en``/``uro-zh`` with URO's argument order (the model's answer is jiwer's
*reference*), score = ok-rate x (1 - mean WER of ok items) x 100, ok = WER <= 0.5.
An item that cannot be scored (missing wav, malformed line, judge down, a judge sample
that does not parse) is failed and counts 0 in the dataset score — URO-Bench scores API
errors as 0 the same way — so ``failed`` says how much of a number is not the model's.
Categories: Understanding / Reasoning / Oral = mean over their datasets, Avg. = mean of
the three, per language; only computed when every dataset of the category was run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .base import (Item, ItemStore, PromptFile, Run, RunnerError, load_prompt_file, reason,
                   score_row, write_jsonl)

# dataset -> (language, category, mode, published size)
DATASETS = {
    "Repeat": ("en", "Understanding", "wer", 252),
    "Summary": ("en", "Understanding", "semi-open", 118),
    "GaokaoEval": ("en", "Understanding", "qa", 303),
    "StoralEval": ("en", "Reasoning", "semi-open", 201),
    "TruthfulEval": ("en", "Reasoning", "semi-open", 470),
    "Gsm8kEval": ("en", "Reasoning", "qa", 582),
    "MLC": ("en", "Reasoning", "qa", 177),
    "AlpacaEval": ("en", "Oral", "open", 199),
    "CommonEval": ("en", "Oral", "open", 200),
    "WildchatEval": ("en", "Oral", "open", 349),
    "Repeat-zh": ("zh", "Understanding", "wer", 127),
    "LCSTS-zh": ("zh", "Understanding", "semi-open", 119),
    "HSK5-zh": ("zh", "Understanding", "qa", 100),
    "SQuAD-zh": ("zh", "Reasoning", "qa", 153),
    "APE-zh": ("zh", "Reasoning", "qa", 190),
    "MLC-zh": ("zh", "Reasoning", "qa", 145),
    "OpenbookQA-zh": ("zh", "Reasoning", "qa", 189),
    "AlpacaEval-zh": ("zh", "Oral", "open", 147),
    "Claude-zh": ("zh", "Oral", "open", 222),
    "Wildchat-zh": ("zh", "Oral", "open", 299),
}
CATEGORIES = ("Understanding", "Reasoning", "Oral")
JUDGE_SETTINGS = {"n": 3, "temperature": 0.5, "top_p": 0.95, "max_tokens": 1024}  # URO's mark_gpt.py
PROTOCOL_JUDGE = "gpt-4o-mini"
PROMPTS_MISSING = ("uro is judged with URO-Bench's own prompts, which are not shipped with qinyu: pass "
                   "--judge-prompts FILE, a JSON object {\"system\", \"open\", \"semi-open\", \"qa\"} filled from "
                   "metrics/mark_gpt.py of URO-Bench (https://github.com/Ruiqi-Yan/URO-Bench); docs/eval.md says how")
# judged mode -> the placeholders its template may use, filled in this order (as mark_gpt.py)
PLACEHOLDERS = {"open": ("question", "answer"), "semi-open": ("question", "answer", "reference"),
                "qa": ("question", "answer", "reference")}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w-]*)\}")
PROTOCOL_ASR = {"en": "Whisper-large-v3 (openai/whisper-large-v3, language not forced)",
                "zh": "FunASR paraformer-zh with fsmn-vad and ct-punc-c"}


@dataclass(frozen=True)
class Prompts:
    system: str
    templates: dict[str, str]  # judged mode -> template
    source: PromptFile

    def fill(self, mode: str, question: str, answer: str, reference: str) -> str:
        """The user message: the mode's placeholders replaced in turn (plain replacement, as mark_gpt.py)."""
        prompt = self.templates[mode]
        values = {"question": question, "answer": answer, "reference": reference}
        for name in PLACEHOLDERS[mode]:
            prompt = prompt.replace("{" + name + "}", values[name])
        return prompt


def load_prompts(path: Path | str | None, modes) -> Prompts:
    """The user's URO prompt file, checked for the system message and every judged mode in ``modes``."""
    source = load_prompt_file(path, PROMPTS_MISSING)
    system = source.text("system", needed_by="the judge's system message")
    templates = {}
    for mode in sorted(set(modes)):
        datasets = ", ".join(d for d, (_, _, m, _) in DATASETS.items() if m == mode)
        template = source.text(mode, needed_by=f"mode {mode}: {datasets}")
        source.check_placeholders((mode,), set(_PLACEHOLDER.findall(template)), PLACEHOLDERS[mode])
        templates[mode] = template
    return Prompts(system, templates, source)


def find_datasets(data: Path, notes: list[str]) -> list[tuple[str, Path]]:
    if (data / "test.jsonl").is_file():
        if data.name not in DATASETS:
            raise RunnerError(f"{data}: {data.name!r} is not a URO-Bench Basic-track dataset (known: "
                              f"{', '.join(DATASETS)})")
        return [(data.name, data / "test.jsonl")]
    root = data / "basic" if (data / "basic").is_dir() else data
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (sub / "test.jsonl").is_file():
            continue
        if sub.name in DATASETS:
            found.append((sub.name, sub / "test.jsonl"))
        else:
            notes.append(f"skipped {sub}: not a Basic-track dataset")
    if not found:
        raise RunnerError(f"{data}: no URO-Bench dataset found (expected basic/{{Dataset}}/test.jsonl)")
    order = list(DATASETS)
    return sorted(found, key=lambda f: order.index(f[0]))


def load_dataset(name: str, path: Path) -> list[Item]:
    mode = DATASETS[name][2]
    items = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        key = f"{name}/{i:04d}"
        data = {"dataset": name, "index": i, "question": "", "reference": ""}
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            items.append(Item(key, data, f"{name}/test.jsonl line {i + 1}: malformed JSON ({e})"))
            continue
        target = row.get("target_text")
        if isinstance(target, list):
            target = " / ".join(str(t) for t in target)
        data.update(question=str(row.get("source_text") or ""), reference=target if isinstance(target, str) else "")
        error = None
        if not isinstance(row.get("source_wav"), str):
            error = f"{name}/test.jsonl line {i + 1}: field 'source_wav' missing or not a string"
        elif mode != "open" and not isinstance(target, str):
            error = f"{name}/test.jsonl line {i + 1}: field 'target_text' missing (mode {mode} needs a reference)"
        else:
            wav = Path(row["source_wav"])
            data["wav"] = str(wav if wav.is_absolute() else path.parent / wav)
            if not Path(data["wav"]).is_file():
                error = f"{name}/test.jsonl line {i + 1}: audio file not found: {data['wav']}"
        items.append(Item(key, data, error))
    return items


def run(r: Run, judge_prompts: Path | str | None = None) -> list[dict]:
    """``judge_prompts``: the URO prompt file (default: ``r.options.judge_prompts``)."""
    from ..judge import JudgeError, parse_uro_score
    from ..metrics.wer import error_rate
    from ..normalize import get_normaliser
    from ..scores import uro_dataset_score, uro_repeat_score

    datasets = r.select_subsets(find_datasets(r.data, r.notes))
    # every scorer is resolved before generating, so a missing one stops the run at once
    judged_modes = {DATASETS[d][2] for d, _ in datasets} - {"wer"}  # Repeat alone is scored by WER only
    prompts = judge = judge_name = None
    if judged_modes:
        prompts = load_prompts(judge_prompts if judge_prompts is not None else r.options.judge_prompts,
                               judged_modes)
        judge = r.judge(PROTOCOL_JUDGE, **JUDGE_SETTINGS)
        judge_name = f"{getattr(judge, 'model', None) or type(judge).__name__} (prompts {prompts.source.label})"
        r.notes.append(f"judge prompts: {prompts.source.describe()}")
    recognisers = {}
    if not r.options.judge_text:
        for lang in sorted({DATASETS[d][0] for d, _ in datasets}):
            recognisers[lang] = r.recogniser(lang, PROTOCOL_ASR[lang], paraformer_vad="fsmn-vad",
                                             paraformer_punc="ct-punc-c")
    model = r.model
    if model.codec is None and not r.options.judge_text:
        raise RunnerError(f"{r.options.model}/config.json names no codec (field 'codec'): this checkpoint cannot "
                          f"speak; judge the text replies with --judge-text, or give it a codec")
    store = ItemStore(r.out)
    session = model.session()

    def build(it, j, replies, state):
        return session.request(model.audio_turn(session, Path(it.data["wav"])), with_history=False)

    def save(it, replies):
        rep = replies[0]
        outputs = r.save_reply_audio(f"{it.data['dataset']}/audio/{it.data['index']:04d}.wav", rep)
        return {"text": rep.text, "finished": rep.finished, "outputs": outputs}

    rows, by_dataset = [], {}
    for name, path in datasets:
        lang, category, mode, _ = DATASETS[name]
        items = r.limited(load_dataset(name, path))
        records = r.generate(items, store, lambda it: 1, build, save, desc=f"uro {name}")
        ok = [it.key for it in items if records[it.key]["status"] == "ok"]
        # the judged text: the ASR transcript of the speech reply, or the text reply
        if r.options.judge_text:
            answers, scorer = {k: records[k]["text"] for k in ok}, "text reply (--judge-text)"
        else:
            recogniser = recognisers[lang]
            scorer = recogniser.name
            wavs = {k: r.out / records[k]["outputs"][0] for k in ok if records[k]["outputs"]}
            answers = r.transcribe_replies(recogniser, wavs)
            answers.update({k: "" for k in ok if k not in wavs})
        scores: dict[str, float] = {}
        for it in items:
            rec = records[it.key]
            if rec["status"] != "ok":
                continue
            answer = answers[it.key]
            if isinstance(answer, Exception):
                records[it.key] = {**rec, "status": "failed", "reason": f"ASR of the reply: {reason(answer)}"}
                continue
            records[it.key] = rec = {**rec, "answer": answer}
            if mode == "wer":
                continue
            if not answer.strip():  # URO-Bench: an empty answer scores 0 without asking the judge
                scores[it.key] = 0.0
                records[it.key]["note"] = "empty answer: scored 0 without the judge (as URO-Bench)"
                continue
            try:
                samples = judge.chat(prompts.system, prompts.fill(mode, it.data["question"], answer,
                                                                   it.data["reference"]))
            except JudgeError as e:
                records[it.key] = {**rec, "status": "failed", "reason": reason(e), "stage": "judge"}
                continue
            parsed = [parse_uro_score(s, mode) for s in samples]
            records[it.key]["judge_answers"] = samples
            if any(p is None for p in parsed):
                bad = next(s for s, p in zip(samples, parsed) if p is None)
                records[it.key].update(status="failed", reason=f"judge answer does not parse: {bad[:120]!r}",
                                       stage="judge")
                continue
            scores[it.key] = sum(parsed) / len(parsed)
        scored = [it.key for it in items if records[it.key]["status"] == "ok"]
        failed = len(items) - len(scored)
        normaliser = None
        if mode == "wer":
            normaliser = get_normaliser(f"uro-{lang}")
            if scored:
                # URO-Bench's quirk, kept: mark_wer.get_wer(lang, answer, reference) hands the model's answer to
                # jiwer as the *reference* and the expected text as the hypothesis
                reference = {it.key: it.data["reference"] for it in items}
                er = error_rate([answers[k] for k in scored], [reference[k] for k in scored], normaliser.name,
                                "utterance")
                wers = dict(zip(scored, er.per_item))
                for k in scored:
                    records[k]["wer"] = wers[k]
                # a failed item counts as WER 1 (not ok), as URO scores a jiwer error
                value = uro_repeat_score([wers.get(it.key, 1.0) for it in items])
            else:
                value = 0.0
            aggregation = "ok-rate x (1 - mean WER of ok items) x 100, ok = WER <= 0.5; failed = not ok"
        else:
            value = uro_dataset_score(mode, [scores.get(it.key, 0.0) for it in items])
            aggregation = f"{'mean x 100 (share of Yes)' if mode == 'qa' else 'mean of 1-5 x 20'} over all items; " \
                          f"failed = 0"
        by_dataset[name] = value
        rows.append(score_row("uro", f"{name} ({mode})", value, len(scored), failed, subset=lang,
                              normaliser=None if normaliser is None else normaliser.label, aggregation=aggregation,
                              judge=None if mode == "wer" else judge_name, scorer=scorer))
        _write_uro_files(r.out / name, items, records, answers if not r.options.judge_text else None)
        r.items += [{"key": it.key, "status": records[it.key]["status"], "reason": records[it.key].get("reason"),
                     "text": records[it.key].get("text"), "answer": records[it.key].get("answer"),
                     "judge_answers": records[it.key].get("judge_answers"), "score": scores.get(it.key),
                     "wer": records[it.key].get("wer"), "note": records[it.key].get("note")} for it in items]
    rows += _categories(by_dataset, rows)
    return rows


def _categories(by_dataset: dict[str, float], rows: list[dict]) -> list[dict]:
    """Understanding / Reasoning / Oral / Avg. per language, over complete categories only."""
    from ..scores import uro_category_score

    out = []
    for lang in ("en", "zh"):
        cats = {}
        for cat in CATEGORIES:
            members = [d for d, (l, c, _, _) in DATASETS.items() if l == lang and c == cat]
            if all(d in by_dataset for d in members):
                cats[cat] = uro_category_score([by_dataset[d] for d in members])
                mine = [row for row in rows if row["metric"].split(" (")[0] in members]
                out.append(score_row("uro", cat, cats[cat], sum(x["n"] for x in mine), sum(x["failed"] for x in mine),
                                     subset=lang, aggregation=f"mean of {len(members)} datasets",
                                     judge=next((x["judge"] for x in mine if x["judge"]), None),
                                     scorer=mine[0]["scorer"]))
        if len(cats) == len(CATEGORIES):
            mine = [row for row in out if row["subset"] == lang]
            out.append(score_row("uro", "Avg.", uro_category_score(list(cats.values())), sum(x["n"] for x in mine),
                                 sum(x["failed"] for x in mine), subset=lang,
                                 aggregation="mean of Understanding, Reasoning, Oral (paper)",
                                 judge=mine[0]["judge"], scorer=mine[0]["scorer"]))
    return out


def _write_uro_files(folder: Path, items: list[Item], records: dict, asr: dict | None) -> None:
    """URO-Bench's per-dataset text files, one line per test.jsonl line."""
    def line(it, value):
        return {f"{it.data['index']:04d}": value}

    ok = {it.key: records[it.key]["status"] == "ok" for it in items}
    write_jsonl(folder / "pred_text.jsonl", [line(it, records[it.key].get("text", "")) for it in items])
    write_jsonl(folder / "question_text.jsonl", [line(it, it.data["question"]) for it in items])
    write_jsonl(folder / "gt_text.jsonl", [line(it, it.data["reference"]) for it in items])
    if asr is not None:
        write_jsonl(folder / "asr_text.jsonl",
                    [line(it, asr.get(it.key, "") if ok[it.key] and isinstance(asr.get(it.key), str) else "")
                     for it in items])
