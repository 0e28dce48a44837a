"""C3 (paper Table 4): spoken questions on phonological/semantic ambiguity and context
dependency; the model's **text** reply is judged by an LLM (C3's own prompts) as right
or wrong.

Data (``--data``): the C3 dataset root with ``english/`` and ``chinese/``; reference
JSON arrays under ``{lang}/text/`` (e.g. ``english/text/ambiguity/phonological/pause.json``)
and the spoken questions under ``{lang}/audio/`` in the answer layout below
(``{folder}/{i}.wav``; multi-turn ``multi-turn/{i}/{j}.wav``). The audio folder name is
our reading of the dataset card ("the same structure as the C3 dataset"); ``wav/`` and
``wavs/`` are accepted too.

Outputs (C3's ResponseStructure, so C3's own evaluate.py can read ``{out}/{lang}``):
``{out}/{lang}/{folder}/{i}.txt`` + ``{i}.wav``, multi-turn ``{folder}/{i}/{j}.txt`` +
``.wav``; ``items.jsonl`` with each item's judge answer and verdict.

Judge prompts (``--judge-prompts FILE``): C3's own ``prompts.json``, passed unchanged; it
is not shipped here. Its layout: ``system_prompts`` -> language (``english`` /
``chinese``) -> the system message, and ``evaluation_prompts`` -> language -> prompt key
(``Task.prompt``) -> a ``str.format`` template. Every key the selected languages need
and every placeholder is checked before anything is generated; the file's name and
sha256 prefix go in the report's judge column.

Scoring as C3's evaluate.py/process_results.py: temperature 0, max_tokens 2048, the
language's system prompt, verdict after the last "The answer is: " / "最终答案为：".
Accuracy per subtest is right / all items of the subtest: an item that could not be
judged (judge down, answer without a verdict, missing audio) counts as not right, as in
C3's script, and is reported as failed. The phonological *generation* items need a human
listening to the wav (C3 annotates them manually): their verdicts are read from
``{out}/manual.json`` (``{"english/ambiguity/phonological/generation/0": "The answer is:
yes."}``), otherwise they are failed with that reason. Overall = the paper's macro mean
of the 5 subtests (Phono, Semantic, Omission, Coref, MultiTurn); C3's own micro
"overall" is reported beside it.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from .base import (Item, ItemError, ItemStore, PromptFile, Run, RunnerError, atomic_write_text,
                   key_path, load_prompt_file, read_json, reason, score_row)

LANGS = {"english": "en", "chinese": "zh"}
SUBTESTS = ("Phono", "Semantic", "Omission", "Coref", "MultiTurn")
JUDGE_SETTINGS = {"temperature": 0.0, "max_tokens": 2048, "retries": 5}  # C3's evaluate.py
PROTOCOL_JUDGE = "GPT-4o or DeepSeek-R1 (C3 reports both)"
PROMPTS_MISSING = ("c3 is judged with C3's own prompts, which are not shipped with qinyu: pass --judge-prompts "
                   "FILE, FILE being prompts.json from the C3 repository (https://github.com/step-out/C3, "
                   "prompts.json at its top level), unchanged; see docs/eval.md")


@dataclass(frozen=True)
class Task:
    folder: str  # answer/audio folder under the language
    reference: str  # JSON file under {lang}/text
    prompt: str | None  # key under evaluation_prompts.{lang} of prompts.json; None: manual annotation
    subtest: str


def _context_tasks() -> list[Task]:
    """The five context-dependency folders (both languages); detection and completion
    (resolution) share one reference file."""
    return [
        Task("context-dependency/omission-detection", "context-dependency/omission.json",
             "context_dependency_omission_detection", "Omission"),
        Task("context-dependency/omission-completion", "context-dependency/omission.json",
             "context_dependency_omission_completion", "Omission"),
        Task("context-dependency/coreference-detection", "context-dependency/coreference.json",
             "context_dependency_coreference_detection", "Coref"),
        Task("context-dependency/coreference-resolution", "context-dependency/coreference.json",
             "context_dependency_coreference_resolution", "Coref"),
        Task("context-dependency/multi-turn", "context-dependency/multi-turn.json", "context_dependency_multi_turn",
             "MultiTurn"),
    ]


TASKS = {
    "english": [
        Task("ambiguity/phonological/generation", "ambiguity/phonological/generation.json", None, "Phono"),
        *[Task(f"ambiguity/phonological/{t}", f"ambiguity/phonological/{t}.json", f"ambiguity_phonological_{t}",
               "Phono") for t in ("heterograph", "pause", "stress", "intonation")],
        *[Task(f"ambiguity/semantic/{t}", f"ambiguity/semantic/{t}.json", f"ambiguity_semantic_{t}", "Semantic")
          for t in ("lexical", "syntactic")],
        *_context_tasks(),
    ],
    "chinese": [
        *[Task(f"ambiguity/phonological/generation/{t}", f"ambiguity/phonological/generation/{t}.json", None, "Phono")
          for t in ("pause", "heteronym", "tone")],
        *[Task(f"ambiguity/phonological/{t}", f"ambiguity/phonological/{t}.json", "ambiguity_phonological", "Phono")
          for t in ("pause", "heteronym", "heterograph", "tone")],
        Task("ambiguity/semantic", "ambiguity/semantic.json", "ambiguity_semantic", "Semantic"),
        *_context_tasks(),
    ],
}


def audio_root(lang_dir: Path) -> Path:
    for name in ("audio", "wav", "wavs"):
        if (lang_dir / name).is_dir():
            return lang_dir / name
    raise RunnerError(f"{lang_dir}: no audio folder (expected {lang_dir / 'audio'} holding the spoken questions "
                      f"as {{folder}}/{{i}}.wav)")


def user_turn_texts(lang: str, task: Task, ref) -> list[str]:
    """The user side of a multi-turn item as C3's judge prompt shows it."""
    if lang == "english":
        if not isinstance(ref, list) or not all(isinstance(t, str) for t in ref) or not ref:
            raise ValueError("an English multi-turn item must be a non-empty list of user turns")
        return ref
    if not isinstance(ref, dict) or not isinstance(ref.get("history"), list) or "question" not in ref:
        raise ValueError("a Chinese multi-turn item needs 'history' (list) and 'question'")
    return [*ref["history"], ref["question"]]


def load_items(data: Path, langs: list[str], limit: int | None) -> list[Item]:
    items = []
    for lang in langs:
        text_root = data / lang / "text"
        if not text_root.is_dir():
            raise RunnerError(f"{data}: {lang}/text is missing (the C3 layout: {lang}/text/<category>.json and "
                              f"{lang}/audio/<folder>/<i>.wav)")
        audio = audio_root(data / lang)
        for task in TASKS[lang]:
            path = text_root / task.reference
            if not path.is_file():
                raise RunnerError(f"C3 reference file missing: {path}")
            refs = read_json(path, "C3 reference JSON")
            if not isinstance(refs, list):
                raise RunnerError(f"{path}: expected a JSON array of items, got {type(refs).__name__}")
            for i, ref in enumerate(refs[:limit] if limit else refs):
                key = f"{lang}/{task.folder}/{i}"
                data_ = {"lang": lang, "task": task, "index": i, "ref": ref}
                try:
                    if task.subtest == "MultiTurn":
                        turns = user_turn_texts(lang, task, ref)
                        wavs = [audio / task.folder / str(i) / f"{j}.wav" for j in range(len(turns))]
                    else:
                        if not isinstance(ref, dict):
                            raise ValueError(f"expected a JSON object, got {type(ref).__name__}")
                        wavs = [audio / task.folder / f"{i}.wav"]
                except ValueError as e:
                    items.append(Item(key, data_, f"{path.name} item {i}: {e}"))
                    continue
                missing = [str(w) for w in wavs if not w.is_file()]
                items.append(Item(key, {**data_, "wavs": [str(w) for w in wavs]},
                                  f"audio file not found: {missing[0]}" if missing else None))
    return items


def template_fields(lang: str, task: Task) -> set[str]:
    """The placeholders ``judge_prompt`` fills for the task (what evaluate.py passes to format)."""
    if task.subtest == "MultiTurn":
        return {"dialogues"}
    if lang == "chinese":
        return {"answer", "content", "annotation", "dialogue_content", "omission_complete", "coreference_complete"}
    fields = {"answer", "content", "notation", "problem", "correct_answer"}
    if task.prompt == "ambiguity_semantic_syntactic":
        fields |= {"ambiguity", "interpretations"}
    return fields


@dataclass(frozen=True)
class Prompts:
    system: dict[str, str]  # language folder -> system message
    templates: dict[tuple[str, str], str]  # (language folder, prompt key) -> template
    source: PromptFile


def load_prompts(path: Path | str | None, langs: list[str]) -> Prompts:
    """C3's prompts.json, checked for every key and placeholder the languages' tasks need."""
    source = load_prompt_file(path, PROMPTS_MISSING)
    system, templates = {}, {}
    for lang in langs:
        system[lang] = source.text("system_prompts", lang, needed_by=f"the {lang} judge's system message")
        for task in TASKS[lang]:
            if task.prompt is None or (lang, task.prompt) in templates:
                continue
            keys = ("evaluation_prompts", lang, task.prompt)
            template = source.text(*keys, needed_by=f"{lang}/{task.folder}")
            try:
                found = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
            except ValueError as e:
                raise RunnerError(f"--judge-prompts {source.path}: {key_path(keys)} is not a str.format template "
                                  f"({e})") from None
            source.check_placeholders(keys, found, template_fields(lang, task))
            templates[lang, task.prompt] = template
    return Prompts(system, templates, source)


def judge_prompt(template: str, lang: str, task: Task, ref, answers: list[str]) -> str:
    """Fill the task's C3 prompt ``template`` the way C3's evaluate.py does."""
    answer = answers[-1] if answers else ""
    if task.subtest == "MultiTurn":
        turns = user_turn_texts(lang, task, ref)
        parts = []
        for u, a in zip(turns, answers):
            for who, text in ((0, u), (1, a)):
                if lang == "english":
                    parts.append(f"\n{'AB'[who]}:\n```\n{text}\n```")
                else:
                    parts.append(f"\n{'甲乙'[who]}说：\n```\n{text}\n```")
        return template.format(dialogues="".join(parts))
    if lang == "chinese":
        fields = {"answer": answer, "content": ref.get("content"), "annotation": ref.get("annotation")}
        if "history" in ref:
            fields["dialogue_content"] = "".join(f"{h}\n" for h in ref["history"])
        fields["omission_complete"] = ref.get("omission_complete")
        fields["coreference_complete"] = ref.get("coreference_complete")
        return _fill(template, fields)
    notation = ref.get("notation")
    fields = {"answer": answer, "content": ref.get("content"), "notation": notation, "problem": ref.get("problem"),
              "correct_answer": ref.get("answer")}
    if task.prompt == "ambiguity_semantic_syntactic":
        if not isinstance(notation, dict) or not isinstance(notation.get("interpretations"), list):
            raise ValueError("a syntactic item's 'notation' needs 'ambiguity' and an 'interpretations' list")
        fields["ambiguity"] = notation.get("ambiguity")
        fields["interpretations"] = "".join(f"\nThe {k + 1} meaning of this sentence is:\n```\n{s}\n```"
                                            for k, s in enumerate(notation["interpretations"]))
    return _fill(template, fields)


def _fill(template: str, fields: dict) -> str:
    """``template.format(**fields)``; a field the prompt needs but the item lacks is a ValueError naming it."""
    import string

    needed = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing = sorted(n for n in needed if fields.get(n) is None)
    if missing:
        raise ValueError(f"the reference item has no {', '.join(missing)} (needed by the judge prompt)")
    return template.format(**fields)


def run(r: Run, judge_prompts: Path | str | None = None) -> list[dict]:
    """``judge_prompts``: C3's prompts.json (default: ``r.options.judge_prompts``)."""
    from ..judge import JudgeError, parse_c3_verdict
    from ..scores import c3_overall

    langs = [lang for lang in LANGS if (r.data / lang).is_dir()]
    if r.options.subsets:
        bad = set(r.options.subsets) - set(LANGS)
        if bad:
            raise RunnerError(f"--subset {', '.join(sorted(bad))}: C3 subsets are english, chinese")
        langs = [lang for lang in langs if lang in r.options.subsets]
    if not langs:
        raise RunnerError(f"{r.data}: no english/ or chinese/ folder (the C3 dataset root)")
    # before generating: missing prompts or a missing judge stop the run at once
    prompts = load_prompts(judge_prompts if judge_prompts is not None else r.options.judge_prompts, langs)
    judge = r.judge(PROTOCOL_JUDGE, **JUDGE_SETTINGS)
    judge_name = getattr(judge, "model", None) or type(judge).__name__
    judge_label = f"{judge_name} (prompts {prompts.source.label})"
    r.notes.append(f"judge prompts: {prompts.source.describe()}")
    items = load_items(r.data, langs, r.options.limit)
    model = r.model
    store = ItemStore(r.out)

    def start(it):
        return model.session()

    def build(it, j, replies, session):
        if j:  # the earlier turns and the model's own text replies are the history
            session.history += [it.data["_turns"][j - 1], _assistant(replies[j - 1].text)]
        turn = model.audio_turn(session, Path(it.data["wavs"][j]))
        it.data.setdefault("_turns", []).append(turn)
        return session.request(turn)

    def save(it, replies):
        lang, task, i = it.data["lang"], it.data["task"], it.data["index"]
        outputs = []
        for j, rep in enumerate(replies):
            base = f"{lang}/{task.folder}/{i}/{j}" if task.subtest == "MultiTurn" else f"{lang}/{task.folder}/{i}"
            atomic_write_text(r.out / f"{base}.txt", rep.text)
            outputs.append(f"{base}.txt")
            outputs += r.save_reply_audio(f"{base}.wav", rep)
        it.data.pop("_turns", None)
        return {"answers": [rep.text for rep in replies], "outputs": outputs}

    records = r.generate(items, store, lambda it: len(it.data["wavs"]), build, save, desc="c3", start=start)

    manual_path = r.out / "manual.json"
    manual = read_json(manual_path, "C3 manual verdicts") if manual_path.is_file() else {}
    if not isinstance(manual, dict):
        raise RunnerError(f"{manual_path}: expected a JSON object of item key -> verdict text")
    verdicts: dict[str, bool] = {}
    bar = r.progress(len(items), "c3: judge")
    for it in items:
        rec = records[it.key]
        bar.update(1)
        if rec["status"] != "ok":
            continue
        lang, task = it.data["lang"], it.data["task"]
        try:
            if task.prompt is None:
                answer = manual.get(it.key)
                if answer is None:
                    raise ItemError(f"phonological generation: needs a human verdict (listen to the wav; add "
                                     f"{it.key!r} to {manual_path})")
                source = "manual"
            else:
                user = judge_prompt(prompts.templates[lang, task.prompt], lang, task, it.data["ref"], rec["answers"])
                answer = judge.chat(prompts.system[lang], user)[0]
                source = judge_name
        except (JudgeError, ItemError, ValueError) as e:
            records[it.key] = {**rec, "status": "failed", "reason": reason(e), "stage": "judge"}
            continue
        verdict = parse_c3_verdict(answer, LANGS[lang])
        rec = {**rec, "judge_answer": answer, "verdict_source": source}
        if verdict is None:
            rec.update(status="failed", reason=f"judge answer does not parse: {answer[-120:]!r}", stage="judge")
        else:
            verdicts[it.key] = verdict
        records[it.key] = rec
    bar.close()

    rows = []
    aggregation = "right / all items of the subtest (not judged = not right, as C3's script)"
    for lang in langs:
        mine = [it for it in items if it.data["lang"] == lang]
        subtests = {}
        for sub in SUBTESTS:
            group = [it for it in mine if it.data["task"].subtest == sub]
            if not group:
                continue
            right = sum(verdicts.get(it.key, False) for it in group)
            failed = sum(records[it.key]["status"] != "ok" for it in group)
            subtests[sub] = 100 * right / len(group)
            rows.append(score_row("c3", f"{sub} acc. (%)", subtests[sub], len(group) - failed, failed, subset=lang,
                                  aggregation=aggregation, judge=judge_label))
        failed = sum(records[it.key]["status"] != "ok" for it in mine)
        if len(subtests) == len(SUBTESTS):
            rows.append(score_row("c3", "Overall (%)", c3_overall(subtests), len(mine) - failed, failed,
                                  subset=lang, aggregation="macro mean of the 5 subtests (paper)",
                                  judge=judge_label))
        right = sum(verdicts.get(it.key, False) for it in mine)
        rows.append(score_row("c3", "overall, micro (%)", 100 * right / len(mine), len(mine) - failed, failed,
                              subset=lang, aggregation="right / all items (C3 process_results.py 'overall')",
                              judge=judge_label))
    r.items = [{"key": it.key, "status": records[it.key]["status"], "reason": records[it.key].get("reason"),
                "answers": records[it.key].get("answers"), "judge_answer": records[it.key].get("judge_answer"),
                "right": verdicts.get(it.key)} for it in items]
    return rows


def _assistant(text: str):
    from ...engine.session import Turn

    return Turn("assistant", text)
