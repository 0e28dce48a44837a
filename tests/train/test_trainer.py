"""The trainer: three stages end to end, freeze policies, distributed equals single
process, and exact resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from qinyu.train.recipe import Recipe, RecipeError, is_trainable
from qinyu.train.trainer import lr_at, read_metrics, train

from ..data.synthetic import write_prepared

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("corpus"), n=16)


def recipe(tmp, name, stage, init, data, **kw) -> Path:
    fields = dict(name=name, stage=stage, out=str(tmp / name), init=init, data=[{"path": str(data)}], steps=6,
                  batch_size=4, max_length=256, lr=3e-3, seed=7, warmup_ratio=0.2)
    fields.update(kw)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


def test_three_stages_and_freeze_policies(tmp_path, corpus):
    r0 = Recipe.load(recipe(tmp_path, "stage0", "align", "preset:tiny", corpus, lr=1e-2,
                            train_audio_embeddings=True))
    train(r0, progress=False)
    init = load_file(str(Path(r0.out) / "checkpoint-000006" / "model.safetensors"))
    r1 = Recipe.load(recipe(tmp_path, "stage1", "pretrain", str(Path(r0.out) / "final"), corpus))
    last1 = train(r1, progress=False)
    r2 = Recipe.load(recipe(tmp_path, "stage2", "sft", str(Path(r1.out) / "final"), corpus, lr=1e-3))
    last2 = train(r2, progress=False)
    assert last2["step"] == 6 and last2["loss"] < read_metrics(Path(r0.out) / "metrics.csv")[0]["loss"]
    assert (Path(r2.out) / "loss.png").is_file() and (Path(r2.out) / "final" / "config.json").is_file()

    # stage 0 trained only the projectors and the audio rows of the embeddings
    from qinyu.model import QinYuForConditionalGeneration, preset_config
    from qinyu.layout import TokenLayout, byte_tokenizer

    torch.manual_seed(7)
    start = QinYuForConditionalGeneration(preset_config("tiny", TokenLayout.from_tokenizer(byte_tokenizer())))
    before = start.state_dict()
    for k, v in init.items():
        if k.startswith(("model.audio_projection.", "model.speaker_projection.")):
            assert not torch.equal(v, before[k]), f"{k} should have trained"
        elif k in ("model.embed_tokens.weight", "lm_head.weight"):
            base = start.layout.audio_base
            assert torch.equal(v[:base], before[k][:base]), f"text rows of {k} must be bit-identical"
            assert not torch.equal(v[base:start.layout.audio_end], before[k][base:start.layout.audio_end])
        else:
            assert torch.equal(v, before[k]), f"frozen {k} changed in stage 0"
    # stages 1-2 never touch the audio encoder
    s1 = load_file(str(Path(r1.out) / "final" / "model.safetensors"))
    s2 = load_file(str(Path(r2.out) / "final" / "model.safetensors"))
    for k in s1:
        if k.startswith("model.audio_model."):
            assert torch.equal(s1[k], init[k]) and torch.equal(s2[k], init[k])
    assert not torch.equal(s1["model.layers.0.mlp.up_proj.weight"], init["model.layers.0.mlp.up_proj.weight"])


def test_a_frozen_audio_encoder_runs_in_eval_mode(tmp_path, corpus, monkeypatch):
    """Stages that freeze the encoder feed the LM the frames it gets at inference (no
    dropout); a recipe that trains the encoder runs it in train mode."""
    from qinyu.model import QinYuForConditionalGeneration

    modes = []
    encode = QinYuForConditionalGeneration.encode_audio

    def recording(self, *args, **kw):
        modes.append(self.audio_encoder.training)
        return encode(self, *args, **kw)

    monkeypatch.setattr(QinYuForConditionalGeneration, "encode_audio", recording)
    train(Recipe.load(recipe(tmp_path, "frozen", "pretrain", "preset:tiny", corpus, steps=2)), progress=False)
    assert modes and not any(modes)
    modes.clear()
    train(Recipe.load(recipe(tmp_path, "unfrozen", "finetune", "preset:tiny", corpus, steps=2, trainable=["*"])),
          progress=False)
    assert modes and all(modes)


def test_a_frozen_encoder_runs_once_per_utterance_and_trains_the_same(tmp_path, corpus, monkeypatch):
    """Its frames are cached: over several epochs each utterance goes through the encoder
    once, and the losses are those of running it every step."""
    from qinyu.model import QinYuForConditionalGeneration
    from qinyu.train import trainer

    encoded = []
    encode = QinYuForConditionalGeneration.encode_audio

    def counting(self, features, *args, **kw):
        encoded.extend(f.data_ptr() for f in features)
        return encode(self, features, *args, **kw)

    monkeypatch.setattr(QinYuForConditionalGeneration, "encode_audio", counting)
    steps = 12  # 16 samples in batches of 4: three epochs
    cached = train(Recipe.load(recipe(tmp_path, "cached", "pretrain", "preset:tiny", corpus, steps=steps)),
                   progress=False)
    assert encoded and len(encoded) == len(set(encoded))  # every utterance once
    once = len(encoded)

    class NoCache:
        def __call__(self, model, features):
            return model.encode_audio(features)

    monkeypatch.setattr(trainer, "EncoderFrameCache", NoCache)
    encoded.clear()
    uncached = train(Recipe.load(recipe(tmp_path, "uncached", "pretrain", "preset:tiny", corpus, steps=steps)),
                     progress=False)
    assert len(encoded) > 2 * once
    rows = zip(read_metrics(tmp_path / "cached" / "metrics.csv"), read_metrics(tmp_path / "uncached" / "metrics.csv"))
    for a, b in rows:
        assert abs(a["loss"] - b["loss"]) < 1e-5 * b["loss"], (a, b)
    assert cached["step"] == uncached["step"] == steps


def test_augmented_speech_is_drawn_anew_each_step_and_repeats_on_a_rerun(tmp_path, corpus, monkeypatch):
    """With ``audio_augment`` the encoder reads SpecAugment copies of the features: new ones
    at every step (so nothing is cached), the prepared features untouched, and the same
    draws when the same recipe runs again (they are a function of the step)."""
    import numpy as np

    from qinyu.model import QinYuForConditionalGeneration

    seen = []
    encode = QinYuForConditionalGeneration.encode_audio

    def recording(self, features, *args, **kw):
        seen.append([f.clone() for f in features])
        return encode(self, features, *args, **kw)

    monkeypatch.setattr(QinYuForConditionalGeneration, "encode_audio", recording)
    settings = {"warp": 0.15, "freq_masks": 2, "freq_width": 10, "time_masks": 0}
    runs = []
    for name in ("aug_a", "aug_b"):
        seen.clear()
        r = Recipe.load(recipe(tmp_path, name, "pretrain", "preset:tiny", corpus, steps=8, audio_augment=settings))
        train(r, progress=False)
        runs.append((list(seen), read_metrics(tmp_path / name / "metrics.csv")))
    (calls, rows_a), (calls_b, rows_b) = runs
    assert len(calls) == 8  # the encoder ran at every step: 16 samples, two epochs, no cache
    assert all(x.equal(y) for c, d in zip(calls, calls_b) for x, y in zip(c, d))
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    # epoch two meets the utterances of epoch one again, each in a new draw
    prepared = {np.load(p).tobytes() for p in Path(corpus).parent.rglob("*.npy")}
    firsts = [f for c in calls[:4] for f in c]
    assert firsts and not any(f.numpy().tobytes() in prepared for f in firsts)
    with pytest.raises(RecipeError, match="audio_augment: unknown SpecAugment setting"):
        Recipe.load(recipe(tmp_path, "bad", "pretrain", "preset:tiny", corpus, audio_augment={"mask": 1}))


def test_rendered_files_are_shared_between_trainings_and_train_the_same(tmp_path, corpus, monkeypatch):
    """A training given an earlier one's RenderedFiles renders none of the same files again and
    trains exactly as a training that rendered them; a file changed since is rendered anew."""
    from qinyu.train import trainer

    rendered, calls = trainer.RenderedFiles(), []
    render = trainer.render_prepared
    monkeypatch.setattr(trainer, "render_prepared", lambda *a, **kw: calls.append(1) or render(*a, **kw))
    train(Recipe.load(recipe(tmp_path, "first", "pretrain", "preset:tiny", corpus, steps=2)), progress=False,
          rendered=rendered)
    assert len(calls) == 16
    shared = train(Recipe.load(recipe(tmp_path, "shared", "pretrain", "preset:tiny", corpus, steps=3)),
                   progress=False, rendered=rendered)
    assert len(calls) == 16  # nothing rendered again
    fresh = train(Recipe.load(recipe(tmp_path, "fresh", "pretrain", "preset:tiny", corpus, steps=3)), progress=False)
    assert len(calls) == 32
    assert shared["loss"] == fresh["loss"]
    rows = list(zip(read_metrics(tmp_path / "shared" / "metrics.csv"), read_metrics(tmp_path / "fresh" / "metrics.csv")))
    assert len(rows) == 3 and all(a["loss"] == b["loss"] for a, b in rows)

    changed = corpus.parent / "changed.prepared.jsonl"  # beside the corpus: its arrays' paths are relative
    lines = corpus.read_text().splitlines(keepends=True)
    changed.write_text("".join(lines[:10]))
    train(Recipe.load(recipe(tmp_path, "changed1", "pretrain", "preset:tiny", changed, steps=1)), progress=False,
          rendered=rendered)
    assert len(calls) == 42
    changed.write_text("".join(lines[:12]))
    train(Recipe.load(recipe(tmp_path, "changed2", "pretrain", "preset:tiny", changed, steps=1)), progress=False,
          rendered=rendered)
    assert len(calls) == 54
    changed.write_text("".join(lines[1:13]))  # other bytes, maybe the same size and time stamp
    train(Recipe.load(recipe(tmp_path, "changed3", "pretrain", "preset:tiny", changed, steps=1)), progress=False,
          rendered=rendered)
    assert len(calls) == 66


def test_gradient_accumulation_gives_the_same_loss(tmp_path, corpus):
    a = train(Recipe.load(recipe(tmp_path, "acc1", "pretrain", "preset:tiny", corpus, steps=2)), progress=False)
    b = train(Recipe.load(recipe(tmp_path, "acc2", "pretrain", "preset:tiny", corpus, steps=2, grad_accum=4)),
              progress=False)
    rows_a, rows_b = read_metrics(Path(tmp_path / "acc1" / "metrics.csv")), read_metrics(
        Path(tmp_path / "acc2" / "metrics.csv"))
    for x, y in zip(rows_a, rows_b):
        assert abs(x["loss"] - y["loss"]) < 1e-4 * x["loss"]


def test_packed_attention_trains_as_the_mask_does(tmp_path, corpus):
    """The default (attention within each packed sample) and the block-diagonal mask give the
    same losses step for step (fp32)."""
    a = train(Recipe.load(recipe(tmp_path, "packed", "pretrain", "preset:tiny", corpus, steps=3)), progress=False)
    b = train(Recipe.load(recipe(tmp_path, "mask", "pretrain", "preset:tiny", corpus, steps=3, attention="mask")),
              progress=False)
    rows_a, rows_b = read_metrics(tmp_path / "packed" / "metrics.csv"), read_metrics(tmp_path / "mask" / "metrics.csv")
    assert len(rows_a) == len(rows_b) == 3
    for x, y in zip(rows_a, rows_b):
        assert abs(x["loss"] - y["loss"]) < 1e-4 * x["loss"]
    assert json.loads((tmp_path / "packed" / "final" / "config.json").read_text())["attn_implementation"] == "sdpa"


def run_cli(args, env_extra=None, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "qinyu", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, **kw)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one(tmp_path, corpus, strategy):
    one = recipe(tmp_path, "single", "pretrain", "preset:tiny", corpus, steps=3)
    two = recipe(tmp_path, "ddp", "pretrain", "preset:tiny", corpus, steps=3, strategy=strategy)
    r = run_cli(["train", "--recipe", str(one), "--quiet"])
    assert r.returncode == 0, r.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29517 + (strategy == "fsdp")),
                "-m", "qinyu", "train", "--recipe", str(two), "--quiet"]
    r = subprocess.run(torchrun, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_metrics(tmp_path / "single" / "metrics.csv"), read_metrics(tmp_path / "ddp" / "metrics.csv")
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= 1e-4 * x["loss"], (x, y)
        assert x["tokens"] == y["tokens"]
    # the final weights agree too (FSDP gathers its shards for the checkpoint)
    wa = load_file(str(tmp_path / "single" / "final" / "model.safetensors"))
    wb = load_file(str(tmp_path / "ddp" / "final" / "model.safetensors"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


def test_sigkill_then_resume_continues_exactly(tmp_path, corpus):
    full = recipe(tmp_path, "full", "pretrain", "preset:tiny", corpus, steps=8, save_every=2)
    killed = recipe(tmp_path, "killed", "pretrain", "preset:tiny", corpus, steps=8, save_every=2)
    assert run_cli(["train", "--recipe", str(full), "--quiet"]).returncode == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "qinyu", "train", "--recipe", str(killed), "--quiet"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and not (latest.is_file() and latest.read_text().strip() == "checkpoint-000004"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.is_file(), "no checkpoint was written before the kill"
    r = run_cli(["train", "--recipe", str(killed), "--resume", "--quiet"])
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = read_metrics(tmp_path / "full" / "metrics.csv"), read_metrics(tmp_path / "killed" / "metrics.csv")
    assert [r["step"] for r in b] == list(range(1, 9))
    for x, y in zip(a, b):
        assert x["loss"] == y["loss"], (x, y)  # bit-identical continuation
    assert torch.equal(load_file(str(tmp_path / "full" / "final" / "model.safetensors"))["lm_head.weight"],
                       load_file(str(tmp_path / "killed" / "final" / "model.safetensors"))["lm_head.weight"])


def test_schedule_and_patterns():
    r = Recipe(name="x", stage="sft", out="o", data=[{"path": "d"}], init="preset:tiny", steps=100, lr=1.0,
               warmup_ratio=0.1, min_lr_ratio=0.1)
    assert lr_at(0, r) == pytest.approx(0.1) and lr_at(9, r) == pytest.approx(1.0)
    assert lr_at(99, r) == pytest.approx(0.1, abs=1e-3)
    assert is_trainable("model.layers.0.x", ["*", "!model.audio_model."])
    assert not is_trainable("model.audio_model.model.embed.weight", ["*", "!model.audio_model."])
    assert is_trainable("model.audio_projection.mlp.0.weight", ["model.audio_projection."])


def test_bad_recipes(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"name": "x", "stage": "warmup", "out": "o", "data": ["d"], "init": "preset:tiny"}))
    with pytest.raises(RecipeError, match="stage 'warmup' is not one of"):
        Recipe.load(p)
    p.write_text(yaml.safe_dump({"name": "x", "stage": "sft", "out": "o", "data": ["d"], "init": "preset:tiny",
                                 "learning_rate": 1}))
    with pytest.raises(RecipeError, match=r"unknown field\(s\) \['learning_rate'\]"):
        Recipe.load(p)
    p.write_text(yaml.safe_dump({"name": "x", "stage": "sft", "out": "o", "data": ["d"], "init": "preset:tiny",
                                 "attention": "flash"}))
    with pytest.raises(RecipeError, match="attention must be packed or mask, got 'flash'"):
        Recipe.load(p)
    p.write_text("name: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.load(p)
