"""Text-to-timbre: a tiny model fitted on synthetic (description, vector) pairs maps
held-out descriptions (unseen attribute combinations, unseen wording) to their own
target vector rather than any other."""

import itertools

import numpy as np
import pytest
import torch

from qinyu.voice.timbre import (
    TextToTimbre, TimbreConfig, TimbreError, format_character_description, train_timbre,
)

ATTRIBUTES = {
    "age": ["young", "middle-aged", "elderly"],
    "gender": ["man", "woman", "girl"],
    "pitch": ["high", "deep", "soft"],
    "pace": ["quickly", "slowly", "calmly"],
}
TRAIN_TEMPLATES = ["A {age} {gender} with a {pitch} voice who speaks {pace}.",
                   "{age} {gender}, {pitch} voice, talks {pace}",
                   "The character is a {age} {gender} whose {pitch} voice moves {pace}."]
HELD_OUT_TEMPLATE = "Voice of a {age} {gender}: {pitch} in tone, speaking {pace}."


def synthetic_targets(seed=0):
    """Each attribute value adds a fixed random direction; norms come out near CAM++'s ~14."""
    rng = np.random.default_rng(seed)
    parts = {(k, v): rng.normal(0, 0.5, 192).astype(np.float32) for k, vs in ATTRIBUTES.items() for v in vs}
    combos = list(itertools.product(*ATTRIBUTES.values()))
    targets = {c: sum(parts[(k, v)] for k, v in zip(ATTRIBUTES, c)) for c in combos}
    return combos, targets


@pytest.fixture(scope="module")
def fitted():
    combos, targets = synthetic_targets()
    rng = np.random.default_rng(1)
    held = {combos[i] for i in rng.choice(len(combos), 16, replace=False)}
    pairs = [(t.format(**dict(zip(ATTRIBUTES, c))), targets[c]) for c in combos if c not in held
             for t in TRAIN_TEMPLATES]
    config = TimbreConfig(hidden=96, filter_channels=192, blocks=2, heads=4)
    model = train_timbre(pairs, config, steps=600, lr=2e-3, batch_size=64, seed=0)
    return model, combos, targets, held


def test_held_out_descriptions_map_to_their_own_target(fitted):
    model, combos, targets, held = fitted
    names = sorted(combos)
    matrix = np.stack([targets[c] for c in names])
    hits = 0
    for c in held:
        vec = model.generate(HELD_OUT_TEMPLATE.format(**dict(zip(ATTRIBUTES, c))), seed=3)
        dist = np.linalg.norm(matrix - vec, axis=1)
        hits += names[int(dist.argmin())] == c
    assert hits / len(held) >= 0.8, f"{hits}/{len(held)} held-out descriptions nearest to their own target"


def test_generation_is_deterministic_per_seed_and_saves(fitted, tmp_path):
    model = fitted[0]
    a = model.generate("an elderly man with a deep voice", seed=5)
    assert a.shape == (192,) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, model.generate("an elderly man with a deep voice", seed=5))
    assert not np.array_equal(a, model.generate("an elderly man with a deep voice", seed=6))
    model.save(tmp_path / "timbre")
    loaded = TextToTimbre.load(tmp_path / "timbre", text_encoder=model.text_encoder)
    assert np.array_equal(loaded.generate("an elderly man with a deep voice", seed=5), a)


def test_guidance_uses_the_unconditional_branch(fitted):
    model = fitted[0]
    emb = model.embed_text(["a young girl with a high voice"])
    g = torch.Generator().manual_seed(0)
    plain = model.sample(emb, guidance=0.0, generator=g)
    g = torch.Generator().manual_seed(0)
    guided = model.sample(emb, guidance=0.7, generator=g)
    assert not torch.allclose(plain, guided)


def test_reference_description_formatting():
    assert format_character_description("该角色是一个「中」年「男」性， 性格「沉稳」") == "中年男性，性格沉稳。"
    # the reference's other branch drops the prefix and every 年 and 性 (性格 becomes 格)
    assert format_character_description("该角色是一个中年男性，性格开朗") == "中男，格开朗"


def test_bad_inputs(fitted, tmp_path):
    model = fitted[0]
    with pytest.raises(TimbreError, match="non-empty strings"):
        model.generate("   ")
    with pytest.raises(TimbreError, match="192-d"):
        train_timbre([("a voice", np.zeros(10))], TimbreConfig(hidden=32, filter_channels=32, blocks=1),
                     steps=1, text_encoder=model.text_encoder)
    with pytest.raises(TimbreError, match="timbre.json is missing"):
        TextToTimbre.load(tmp_path)
