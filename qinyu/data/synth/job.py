"""Running a synthesis pipeline as a resumable, sharded job with a manifest.

A pipeline plans a fixed list of items (``items()``) and makes one at a time
(``make(item, out)`` -> training samples). The job:

- takes the items of its shard (``--shard i/n``: item k belongs to shard k mod n, after
  ``--limit`` has cut the list), so n processes split the work with no overlap;
- skips items already done: each finished item leaves ``records/<id>.json`` holding its
  samples and a key (a hash of the item and of the pipeline's configuration), and an
  item counts as done only if that key still matches, so changing the backend redoes it;
- makes the rest. An item that raises is recorded as failed with the error, and the
  job goes on with the next one; ``Skip`` records a deliberate drop (filtered out,
  scored too low), which is not retried. Re-running the job fills the gaps;
- rebuilds ``samples.jsonl`` (every made sample, validated with
  ``qinyu.data.schema.check_file``) and ``manifest.json`` (what was made, skipped and
  failed, and why) from the records. That step holds a file lock, so shards running in
  parallel cannot overwrite each other's view: the last one to finish lists everything.

Layout of ``OUT``: ``samples.jsonl``, ``manifest.json``, ``records/``, ``wavs/<item id>/``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class Skip(Exception):
    """Raised by ``make`` to drop an item on purpose (the reason is recorded, not retried)."""


class JobError(ValueError):
    """The job cannot start: bad shard, or OUT holds a different pipeline's job."""


@dataclass(frozen=True)
class Item:
    id: str      # file-safe and unique within the pipeline
    spec: dict   # everything needed to make it (JSON)


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_shard(text: str | None) -> tuple[int, int]:
    """'2/4' -> (2, 4): the third of four shards. None -> (0, 1)."""
    if text is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise JobError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def select(items: list[Item], shard: tuple[int, int] = (0, 1), limit: int | None = None) -> list[Item]:
    """The items one shard makes: the first ``limit`` items, then every n-th from i."""
    i, n = shard
    planned = items if limit is None else items[:max(0, limit)]
    return [it for k, it in enumerate(planned) if k % n == i]


class ItemOutput:
    """Where ``make`` writes an item's audio: ``wavs/<item id>/<name>.wav`` under OUT."""

    def __init__(self, root: Path, item_id: str):
        self.root = Path(root)
        self.folder = self.root / "wavs" / item_id

    def save_wav(self, name: str, wav: np.ndarray, sample_rate: int) -> str:
        """Write atomically; returns the path relative to OUT (what samples.jsonl holds)."""
        from ...audio.io import check_waveform, save_audio

        wav = check_waveform(wav, int(sample_rate), name=f"{self.folder.name}/{name}")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.wav"
        tmp = self.folder / f".{name}.{os.getpid()}.tmp.wav"
        save_audio(tmp, wav, int(sample_rate))
        os.replace(tmp, path)
        return path.relative_to(self.root).as_posix()


@dataclass
class Summary:
    pipeline: str
    shard: tuple[int, int]
    selected: int = 0           # items in this shard
    already_done: int = 0       # of those, finished by an earlier run
    made: int = 0               # made now
    skipped: int = 0            # dropped on purpose now
    failed: int = 0             # failed now
    failures: list = field(default_factory=list)   # (item id, error) of this run
    samples: int = 0            # samples in samples.jsonl (all shards)
    problems: list = field(default_factory=list)   # check_file problems of samples.jsonl
    out: Path | None = None

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.problems

    def line(self) -> str:
        i, n = self.shard
        return (f"{self.pipeline} shard {i}/{n}: {self.selected} item(s): {self.made} made, {self.skipped} skipped, "
                f"{self.failed} failed, {self.already_done} already done; samples.jsonl holds {self.samples} "
                f"sample(s)" + (f", {len(self.problems)} problem(s)" if self.problems else ""))


def item_key(item: Item, config: dict) -> str:
    blob = json.dumps({"spec": item.spec, "config": config}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # missing or torn: the item is simply made again


def run_job(pipeline, out, shard: tuple[int, int] = (0, 1), limit: int | None = None,
            progress: bool = True) -> Summary:
    """Make this shard's missing items, then rebuild samples.jsonl and manifest.json."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_owner(out, pipeline.name)
    config = pipeline.config()
    plan = pipeline.items()
    ids = [it.id for it in plan]
    bad = [i for i in ids if not _SAFE_ID.match(i)]
    if bad or len(set(ids)) != len(ids):
        raise JobError(f"{pipeline.name}: item ids must be unique and file-safe; bad: "
                       f"{bad[:5] or sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    mine = select(plan, shard, limit)
    summary = Summary(pipeline.name, shard, selected=len(mine), out=out)
    records = out / "records"
    started = time.time()
    bar = tqdm(mine, desc=f"synth {pipeline.name} {shard[0]}/{shard[1]}", unit="item", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for item in bar:
            key = item_key(item, config)
            path = records / f"{item.id}.json"
            old = _read_record(path) if path.is_file() else None
            if old and old.get("key") == key and old.get("status") in ("made", "skipped"):
                summary.already_done += 1
                continue
            record = {"id": item.id, "key": key, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            try:
                samples = pipeline.make(item, ItemOutput(out, item.id))
                record |= {"status": "made", "samples": samples}
                summary.made += 1
            except Skip as e:
                record |= {"status": "skipped", "reason": str(e)}
                summary.skipped += 1
            except Exception as e:  # noqa: BLE001 - one bad item must not stop the job; the error is recorded
                error = f"{type(e).__name__}: {e}"
                record |= {"status": "failed", "error": error}
                summary.failed += 1
                summary.failures.append((item.id, error))
            _write_json(path, record)
            bar.set_postfix(made=summary.made, failed=summary.failed, skipped=summary.skipped, refresh=False)
    finally:  # also after Ctrl-C: what was made so far is listed
        bar.close()
        _rebuild(out, pipeline, plan, config, summary, started, limit)
    return summary


def _check_owner(out: Path, name: str) -> None:
    manifest = out / "manifest.json"
    if manifest.is_file():
        try:
            owner = json.loads(manifest.read_text(encoding="utf-8")).get("pipeline")
        except (OSError, json.JSONDecodeError):
            return
        if owner and owner != name:
            raise JobError(f"{out} holds a {owner!r} synthesis job; use another --out for {name!r}")


def _rebuild(out: Path, pipeline, plan: list[Item], config: dict, summary: Summary, started: float,
             limit: int | None) -> None:
    from ..schema import check_file

    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # shards finishing together take turns
        made, skipped, failed, pending, stale = [], [], [], [], 0
        lines = []
        for item in plan:
            path = out / "records" / f"{item.id}.json"
            rec = _read_record(path) if path.is_file() else None
            if rec is None:
                pending.append(item.id)
                continue
            if rec.get("key") != item_key(item, config):
                stale += 1
                pending.append(item.id)
                continue
            status = rec.get("status")
            if status == "made":
                made.append(item.id)
                lines += [json.dumps(s, ensure_ascii=False) + "\n" for s in rec.get("samples", [])]
            elif status == "skipped":
                skipped.append({"id": item.id, "reason": rec.get("reason", "")})
            else:
                failed.append({"id": item.id, "error": rec.get("error", "")})
        samples_path = out / "samples.jsonl"
        tmp = out / f".samples.{os.getpid()}.tmp"
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, samples_path)
        count, problems = check_file(samples_path) if lines else (0, [])
        summary.samples, summary.problems = count, [str(p) for p in problems]
        old = _read_record(out / "manifest.json") or {}
        run = {"shard": f"{summary.shard[0]}/{summary.shard[1]}", "limit": limit,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
               "seconds": round(time.time() - started, 2), "selected": summary.selected,
               "already_done": summary.already_done, "made": summary.made, "skipped": summary.skipped,
               "failed": summary.failed, "stats": getattr(pipeline, "stats", lambda: {})()}
        manifest = {
            "pipeline": pipeline.name, "config": config,
            "counts": {"planned": len(plan), "made": len(made), "skipped": len(skipped), "failed": len(failed),
                       "pending": len(pending), "stale": stale, "samples": count},
            "samples_file": "samples.jsonl",
            "check": {"samples": count, "problems": summary.problems[:50]},
            "failed": failed, "skipped": skipped, "made": made,
            "runs": (old.get("runs") or [])[-49:] + [run],
        }
        _write_json(out / "manifest.json", manifest)
