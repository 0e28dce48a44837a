"""CharacterEval (the public proxy of the paper's role-play text scores, Table 2/8): the
model continues Chinese role-play dialogues in character; a reward model scores the
reply's first line on each example's annotated dimensions (1-5).

Data (``--data``): CharacterEval's ``data/`` folder (or the repository root holding it):
``test_data.jsonl`` (really a JSON array of ``{id, role, novel_name, context}``),
``character_profiles.json`` (role -> profile dict) and ``id2metric.jsonl`` (really a JSON
dict ``str(id)`` -> list of ``[metric_en, metric_zh]``).

Prompt (CharacterEval's get_response.py): no system message; the first user turn is
``str(profile)`` + "现在请你扮演一个角色扮演专家。请你根据上述信息扮演{role}进行对话。", the
first assistant turn "好的！现在我来扮演{role}。" (+ "我首先发话：…" when the role speaks
first); then, for each line of the role, the line just before it as the user turn and
the role's line as the assistant turn, both as ``speaker：text``; the last context line
is the query. The reply's first line is scored (transform_format.py).

Scoring: ``RewardModel.score(profile, context, response, metric_zh) -> float`` (1-5) per
(id, metric) pair; per-metric unweighted mean over the pairs (compute_score.py); the
paper's CST (KA, KH, PB, PU; KE left out), CNV, ATR x 20. The protocol's scorer is
morecry/BaichuanCharRM (7B), which is not available offline: without ``--reward-model
DIR`` the run stops with ScorerMissing. Not comparable to the paper's Table 2, which used
an in-house role-play set (only the scorer is shared).

Outputs: ``generation.jsonl`` (a JSON array like get_response.py's, with ``model_output``),
``audio/{id}.wav`` when the checkpoint can speak, ``items.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Protocol

from .base import (Item, ItemStore, Run, RunnerError, atomic_write_text, read_json, reason,
                   safe_name, score_row)

ROLE_PLAY_INSTRUCTION = "现在请你扮演一个角色扮演专家。请你根据上述信息扮演{role}进行对话。"
PUBLISHED_RM = "morecry/BaichuanCharRM (Hugging Face; a 7B Baichuan reward model with its own modeling code)"


class RewardModel(Protocol):
    name: str

    def score(self, profile: dict, context: str, response: str, metric_zh: str) -> float: ...


def rm_input_text(profile: dict, context: str, response: str, metric_zh: str) -> str:
    """The reward model's input text (CharacterEval's run_char_rm.py ``format_input``)."""
    return (f"<RoleInfo>\n\n{profile}\n\n<Context>\n\n{context}\n\n<Response>\n\n{response}\n\n<Dimension>\n\n"
            f"{metric_zh}")


class BaichuanCharRM:
    """morecry/BaichuanCharRM from a local folder, run as run_char_rm.py does: the input
    text without special tokens + EOS, left-truncated to the last 4,096 tokens, bf16;
    score = second output x 4 + 1. The folder's own modeling/tokenizer code is loaded
    through transformers' dynamic-module loader. Not exercised here (no weights offline)."""

    NEEDED = ("config.json", "modeling_baichuan.py", "tokenization_baichuan.py")

    def __init__(self, path, device: str | None = None, max_length: int = 4096):
        import torch
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        from ..judge import ScorerMissing

        path = Path(path)
        missing = [f for f in self.NEEDED if not (path / f).is_file()]
        if not path.is_dir() or missing:
            raise ScorerMissing(f"reward model folder {path} is incomplete (missing {', '.join(missing) or 'folder'});"
                                f" download {PUBLISHED_RM}")
        model_cls = get_class_from_dynamic_module("modeling_baichuan.BaichuanCharRM", str(path))
        tokenizer_cls = get_class_from_dynamic_module("tokenization_baichuan.BaichuanTokenizer", str(path))
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = tokenizer_cls.from_pretrained(str(path))
        self.model = model_cls.from_pretrained(str(path), torch_dtype=torch.bfloat16).to(self.device).eval()
        self.max_length = max_length
        self.name = f"BaichuanCharRM ({path.name})"

    def score(self, profile: dict, context: str, response: str, metric_zh: str) -> float:
        import torch

        ids = self.tokenizer.encode(text=rm_input_text(profile, context, response, metric_zh),
                                    add_special_tokens=False) + [self.tokenizer.eos_token_id]
        ids = ids[-self.max_length:]
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids], device=self.device))
        return float(out[1].item()) * 4 + 1


def load_reward_model(spec) -> RewardModel:
    from ..judge import ScorerMissing

    if spec is None:
        raise ScorerMissing(f"CharacterEval is scored by the reward model {PUBLISHED_RM}, which is not available "
                            f"offline and not configured: pass --reward-model DIR (a local copy)")
    if isinstance(spec, (str, Path)):
        return BaichuanCharRM(spec)
    return spec


def parse_context(context: str) -> list[tuple[str, str]]:
    """``speaker：text`` lines -> (speaker, text), split at the first full-width colon (get_response.py)."""
    return [(line.split("：")[0], "：".join(line.split("：")[1:])) for line in context.split("\n")]


def dialogue_messages(profile: dict, role: str, context: str) -> tuple[list[tuple[str, str]], str]:
    """(history as (role, text) pairs, query) exactly as get_response.py's concat_messages."""
    lines = parse_context(context)
    if lines[-1][0] == role:
        raise ValueError(f"the last context line is by {role} itself (CharacterEval expects another speaker)")
    system = f"{profile}\n{ROLE_PLAY_INSTRUCTION.format(role=role)}\n"
    first = f"好的！现在我来扮演{role}。" + (f"我首先发话：{lines[0][1]}" if lines[0][0] == role else "")
    history = [("user", system), ("assistant", first)]
    for i, (speaker, text) in enumerate(lines):
        if speaker != role or i == 0:
            continue
        if lines[i - 1][0] == role:
            raise ValueError(f"context line {i + 1}: two consecutive lines by {role} (get_response.py rejects this)")
        history += [("user", f"{lines[i - 1][0]}：{lines[i - 1][1]}"), ("assistant", f"{speaker}：{text}")]
    return history, f"{lines[-1][0]}：{lines[-1][1]}"


def find_files(data: Path) -> Path:
    folder = data / "data" if (data / "data" / "test_data.jsonl").is_file() else data
    for name in ("test_data.jsonl", "character_profiles.json", "id2metric.jsonl"):
        if not (folder / name).is_file():
            raise RunnerError(f"CharacterEval file missing: {folder / name} (expected test_data.jsonl, "
                              f"character_profiles.json, id2metric.jsonl)")
    return folder


def load_items(folder: Path) -> tuple[list[Item], dict]:
    path = folder / "test_data.jsonl"
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text)  # the published file is one JSON array despite its name
        rows = [(n, r, None) for n, r in enumerate(records, 1)] if isinstance(records, list) else None
        if rows is None:
            raise RunnerError(f"{path}: expected a JSON array of examples, got {type(records).__name__}")
    except json.JSONDecodeError:
        rows = []  # or real JSONL: one example per line, a malformed line fails alone
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line), None))
                except json.JSONDecodeError as e:
                    rows.append((n, None, f"{path.name} line {n}: malformed JSON ({e})"))
    profiles = read_json(folder / "character_profiles.json", "CharacterEval profiles")
    id2metric = read_json(folder / "id2metric.jsonl", "CharacterEval id2metric (a JSON dict)")
    if not isinstance(profiles, dict) or not isinstance(id2metric, dict):
        raise RunnerError(f"{folder}: character_profiles.json and id2metric.jsonl must each hold a JSON object")
    items, seen = [], set()
    for n, row, error in rows:
        if error:
            items.append(Item(f"entry{n}", error=error))
            continue
        if not isinstance(row, dict) or any(not isinstance(row.get(k), (str, int)) for k in ("id", "role", "context")):
            items.append(Item(f"entry{n}", error=f"{path.name} entry {n}: needs 'id', 'role' and 'context'"))
            continue
        key = str(row["id"])
        if key in seen:
            items.append(Item(f"entry{n}", error=f"{path.name} entry {n}: id {key} listed twice"))
            continue
        seen.add(key)
        role, context = str(row["role"]), str(row["context"])
        data = {"id": row["id"], "role": role, "context": context, "novel_name": row.get("novel_name"),
                "metrics": id2metric.get(key)}
        error = None
        if role not in profiles:
            error = f"id {key}: no profile for role {role!r} in character_profiles.json"
        elif not isinstance(data["metrics"], list) or not data["metrics"]:
            error = f"id {key}: no metrics for this id in id2metric.jsonl"
        else:
            try:
                data["profile"] = profiles[role]
                data["history"], data["query"] = dialogue_messages(profiles[role], role, context)
            except (ValueError, IndexError) as e:
                error = f"id {key}: {e}"
        items.append(Item(key, data, error))
    return items, profiles


def run(r: Run) -> list[dict]:
    from ...engine.session import Persona, Turn
    from ..scores import CHARACTEREVAL_GROUPS, CHARACTEREVAL_METRICS, charactereval_table

    folder = find_files(r.data)
    rm = load_reward_model(r.options.reward_model)  # before generating: a missing scorer stops the run at once
    rm_name = getattr(rm, "name", type(rm).__name__)
    items, _ = load_items(folder)
    items = r.limited(items)
    model = r.model
    store = ItemStore(r.out)

    def build(it, j, replies, state):
        session = model.session(Persona(system=""))  # get_response.py sends no system message
        session.history = [Turn(role, text) for role, text in it.data["history"]]
        return session.request(session.user_turn(text=it.data["query"]))

    def save(it, replies):
        rep = replies[0]
        outputs = r.save_reply_audio(f"audio/{safe_name(str(it.data['id']))}.wav", rep)
        # transform_format.py: only the first line is scored ("prevent continuous generation")
        return {"model_output": rep.text, "response": rep.text.split("\n")[0], "outputs": outputs}

    records = r.generate(items, store, lambda it: 1, build, save, desc="charactereval")
    abbrev = {en: ab for ab, (en, _) in CHARACTEREVAL_METRICS.items()}
    pairs: dict[str, list[float]] = {ab: [] for ab in CHARACTEREVAL_METRICS}
    failed_pairs: dict[str, int] = {ab: 0 for ab in CHARACTEREVAL_METRICS}
    bar = r.progress(len(items), "charactereval: reward model")
    for it in items:
        bar.update(1)
        rec = records[it.key]
        metrics = it.data.get("metrics") or []
        item_scores, problems = {}, []
        for pair in metrics:
            en, zh = (pair + [None, None])[:2] if isinstance(pair, list) else (None, None)
            ab = abbrev.get(en)
            if ab is None:
                problems.append(f"unknown metric {pair!r} in id2metric.jsonl")
                continue
            if rec["status"] != "ok":
                failed_pairs[ab] += 1
                continue
            try:
                value = float(rm.score(it.data["profile"], it.data["context"], rec["response"], zh))
            except Exception as e:  # the reward model's failure fails this pair only
                failed_pairs[ab] += 1
                problems.append(f"{en}: reward model failed: {reason(e)}")
                continue
            pairs[ab].append(value)
            item_scores[en] = value
        records[it.key] = {**rec, "scores": item_scores}
        if problems and rec["status"] == "ok":
            records[it.key].update(status="failed", reason="; ".join(problems), stage="reward model")
    bar.close()

    rows = []
    aggregation = "mean over (id, metric) records, 1-5 (compute_score.py); failed pairs left out"
    means = {}
    for ab, (en, _) in CHARACTEREVAL_METRICS.items():
        if pairs[ab]:
            means[ab] = mean(pairs[ab])
        rows.append(score_row("charactereval", f"{ab} ({en})", means.get(ab), len(pairs[ab]), failed_pairs[ab],
                              aggregation=aggregation, scorer=rm_name))
    try:
        table = charactereval_table(means)
    except ValueError as e:  # a group lacks a metric (e.g. a small --limit): no group score, say why
        r.notes.append(f"CST/CNV/ATR not computed: {e}")
        table = {}
    for group, value in table.items():
        members = CHARACTEREVAL_GROUPS[group]
        rows.append(score_row("charactereval", group, value, sum(len(pairs[m]) for m in members),
                              sum(failed_pairs[m] for m in members),
                              aggregation=f"mean of {', '.join(members)} x 20 (paper)", scorer=rm_name))
    r.notes.append("CharacterEval: public test set; the paper's Table 2 used an in-house role-play set, so these "
                   "numbers are not comparable to it")
    atomic_write_text(r.out / "generation.jsonl", json.dumps(
        [{"id": it.data.get("id"), "role": it.data.get("role"), "novel_name": it.data.get("novel_name"),
          "context": it.data.get("context"), "model_output": records[it.key].get("model_output", "ERROR")}
         for it in items if it.data], ensure_ascii=False, indent=1))
    r.items = [{"key": it.key, "status": records[it.key]["status"], "reason": records[it.key].get("reason"),
                "response": records[it.key].get("response"), "scores": records[it.key].get("scores")}
               for it in items]
    return rows
