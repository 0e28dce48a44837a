import json

import numpy as np
import pytest
import torch

from qinyu.demo import overfit, synthetic_batch
from qinyu.layout import AssistantSpeech, UserSpeech, render, with_voice_prompt
from qinyu.model import (
    CheckpointError, ConfigError, InputError, QinYuConfig, QinYuForConditionalGeneration, collate, new_checkpoint,
)


def test_key_names_follow_reference_layout(tiny):
    keys = set(tiny.state_dict())
    for k in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
              "model.layers.1.self_attn.k_norm.weight", "model.norm.weight", "lm_head.weight",
              "model.audio_projection.pre_proj_layernorm.weight", "model.audio_projection.pre_proj_layernorm.bias",
              "model.audio_projection.mlp.0.weight", "model.audio_projection.mlp.2.weight",
              "model.speaker_projection.mlp.0.weight", "model.speaker_projection.mlp.2.weight"):
        assert k in keys, k
    assert any(k.startswith("model.audio_model.model.") for k in keys)
    assert tiny.model.audio_projection.mlp[0].weight.shape == (64, 512)
    assert tiny.model.speaker_projection.mlp[0].weight.shape == (64, 192)


def test_batch_with_padding_equals_single(tiny, tokenizer, layout):
    batch = synthetic_batch(tokenizer, layout, num_samples=3, seed=1)
    with torch.no_grad():
        together = tiny(**batch).logits
        for i in range(3):
            n = int(batch["attention_mask"][i].sum())
            single = tiny(input_ids=batch["input_ids"][i:i + 1, :n], audio_steps=batch["audio_steps"][i:i + 1, :n],
                          audio_features=[batch["audio_features"][i]],
                          speaker_embeddings=batch["speaker_embeddings"][i]).logits
            torch.testing.assert_close(together[i, :n], single[0], atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_identical_logits(tiny, tokenizer, layout, tmp_path):
    batch = synthetic_batch(tokenizer, layout, num_samples=2, seed=2)
    tiny.save_pretrained(tmp_path / "ck", tokenizer=tokenizer)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors",
                                                                    "tokenizer.json"]
    loaded = QinYuForConditionalGeneration.from_pretrained(tmp_path / "ck")
    with torch.no_grad():
        assert torch.equal(tiny(**batch).logits, loaded(**batch).logits)


def test_tied_embeddings_save_without_lm_head(layout, tmp_path):
    from qinyu.model import preset_config

    cfg = preset_config("tiny", layout)
    cfg.backbone["tie_word_embeddings"] = True
    m = QinYuForConditionalGeneration(cfg)
    assert m.lm_head.weight is m.model.embed_tokens.weight
    m.save_pretrained(tmp_path)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    loaded = QinYuForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, m.lm_head.weight)


def test_overfits_hybrid_samples_to_99_percent(layout, tokenizer):
    """Loss goes down: a tiny model learns text and all 8 codebooks of a few samples."""
    torch.manual_seed(0)
    from qinyu.model import preset_config

    model = QinYuForConditionalGeneration(preset_config("tiny", layout))
    batch = synthetic_batch(tokenizer, layout, num_samples=4, seed=0)
    with torch.no_grad():
        start_loss = model(**batch).loss.item()
    acc, history = overfit(model, batch, steps=300)
    assert set(acc) == {"text", *(f"cb{q}" for q in range(8))}
    assert min(acc.values()) >= 0.99, acc
    assert history[-1][1] < start_loss / 5


def test_audio_heads_option(layout, tokenizer):
    from qinyu.model import preset_config

    cfg = preset_config("tiny", layout)
    cfg.use_audio_heads = True
    m = QinYuForConditionalGeneration(cfg).eval()
    batch = synthetic_batch(tokenizer, layout, num_samples=1)
    with torch.no_grad():
        out = m(**batch)
        h = out.hidden_states
        first = layout.first_audio_token_id
        torch.testing.assert_close(out.logits[..., first + 1032:first + 2064], m.audio_heads[1](h))
    assert out.logits.shape[-1] == m.lm_head.out_features


# -- bad input ------------------------------------------------------------------------

def one_sample(tokenizer, layout):
    codes = np.random.default_rng(0).integers(0, 1024, (8, 5))
    r = render(with_voice_prompt([{"role": "user", "content": "<|audio|>"},
                                  {"role": "assistant", "content": "ok<|audio|>"}]),
               tokenizer, layout, [UserSpeech(3), AssistantSpeech(codes)])
    batch = collate([r], layout.im_end)
    batch["audio_features"] = [torch.randn(3, 560)]
    batch["speaker_embeddings"] = torch.randn(2, 192)
    return batch


def test_audio_code_out_of_range(tiny, tokenizer, layout):
    batch = one_sample(tokenizer, layout)
    p = int((batch["audio_steps"][0, :, 0] >= 0).nonzero()[0])
    batch["audio_steps"][0, p, 3] = 1032
    with pytest.raises(InputError, match=f"out of range at batch 0, position {p}, codebook 3: 1032"):
        tiny(**batch)


def test_speaker_count_mismatch(tiny, tokenizer, layout):
    batch = one_sample(tokenizer, layout)
    batch["speaker_embeddings"] = torch.randn(3, 192)
    with pytest.raises(InputError, match="3 speaker vectors given but input_ids hold 2"):
        tiny(**batch)
    batch["speaker_embeddings"] = None
    with pytest.raises(InputError, match="2 <|speaker|>.*no speaker vectors"):
        tiny(**batch)


def test_user_audio_frame_mismatch(tiny, tokenizer, layout):
    batch = one_sample(tokenizer, layout)
    batch["audio_features"] = [torch.randn(4, 560)]
    with pytest.raises(InputError, match="4 encoder frames .* 3 <|context_of_audio|>"):
        tiny(**batch)


def test_sequence_longer_than_backbone(tiny, layout):
    ids = torch.full((1, 4097), 65)
    with pytest.raises(InputError, match="4097 positions is longer than the backbone's maximum of 4096"):
        tiny(input_ids=ids)


def test_audio_token_without_steps(tiny, layout):
    ids = torch.tensor([[65, layout.audio_token_id(0, 3)]])
    with pytest.raises(InputError, match="no audio_steps"):
        tiny(input_ids=ids)


def test_schedule_with_zero_count_rejected_in_config(layout):
    from qinyu.model import preset_config

    d = preset_config("tiny", layout).to_dict()
    d["interleave_schedule"] = [[1, 8], [0, 8]]
    with pytest.raises(ConfigError, match="interleave_schedule.*text_n must be positive, got 0"):
        QinYuConfig.from_dict(d)


# -- checkpoint folders -------------------------------------------------------------

def test_missing_and_malformed_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        QinYuForConditionalGeneration.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        QinYuForConditionalGeneration.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        QinYuForConditionalGeneration.from_pretrained(tmp_path)


def test_checkpoint_missing_weights_and_bad_fields(tmp_path):
    ck = new_checkpoint(tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    (ck / "model.safetensors").rename(tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="has no weights: expected model.safetensors"):
        QinYuForConditionalGeneration.from_pretrained(ck)
    (tmp_path / "w.safetensors").rename(ck / "model.safetensors")
    (ck / "config.json").write_text(json.dumps({**cfg, "hiden_size": 3}))
    with pytest.raises(CheckpointError, match=r"unknown config field\(s\) \['hiden_size'\]"):
        QinYuForConditionalGeneration.from_pretrained(ck)
    cfg["backbone"]["num_hidden_layers"] = 3
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"11 weight\(s\) missing, e.g. \['model.layers.2"):
        QinYuForConditionalGeneration.from_pretrained(ck)


def test_tokenizer_must_match_config(tmp_path):
    ck = new_checkpoint(tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["token_layout"]["speaker"] += 1
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match config.json token_layout.*speaker"):
        QinYuForConditionalGeneration.from_pretrained(ck)


def test_ctc_compress_left_aligns_one_frame_per_ctc_token():
    from qinyu.model.modeling import ctc_compress

    blank = 4
    # greedy path: 1 1 blank 2 blank 2 3 3 blank -> tokens 1 2 2 3
    ids = [1, 1, blank, 2, blank, 2, 3, 3, blank]
    logits = torch.full((len(ids), 5), -5.0)
    for t, i in enumerate(ids):
        logits[t, i] = 5.0 + t  # each frame distinguishable
    out = ctc_compress(logits)
    assert out.shape == logits.shape
    assert out[:4].argmax(-1).tolist() == [1, 2, 2, 3]
    assert torch.equal(out[:4], logits[[0, 3, 5, 6]])  # the first frame of each token, in order
    assert torch.equal(out[4:], torch.zeros(5, 5))
    assert torch.equal(ctc_compress(torch.zeros(0, 5)), torch.zeros(0, 5))


def _ctc_embedding_model(layout, tokenizer):
    """The tiny backbone with a small SenseVoice encoder whose CTC head covers the text tokens."""
    from qinyu.model.presets import ctc_classes, preset_config

    config = preset_config("tiny", layout)
    config.audio_encoder = {"type": "sensevoice", "input_size": 560, "output_size": 32, "attention_heads": 4,
                            "linear_units": 64, "num_blocks": 1, "tp_blocks": 0,
                            "vocab_size": ctc_classes(tokenizer), "keep_query_frames": False}
    config.audio_encoder_output_size = 32
    config.audio_ctc_embedding = True
    torch.manual_seed(0)
    return QinYuForConditionalGeneration(config).eval()


def test_ctc_embedding_adds_the_text_embeddings_ctc_hears(layout, tokenizer):
    model = _ctc_embedding_model(layout, tokenizer)
    head = model.audio_encoder.ctc.ctc_lo
    blank = head.out_features - 1
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-30.0)
        frames = torch.randn(3, 32)
        plain = model.model.audio_projection(frames)
        table = model.model.get_input_embeddings().weight
        head.bias[7] = 30.0  # every frame hears token 7
        torch.testing.assert_close(model.project_audio(frames) - plain, table[7].expand(3, -1), atol=1e-5, rtol=1e-4)
        head.bias[7] = -30.0
        head.bias[blank] = 30.0  # every frame is blank: nothing added
        torch.testing.assert_close(model.project_audio(frames), plain)
        head.bias[blank] = 0.0
        head.bias[7] = head.bias[9] = 0.0  # a third each of blank, 7 and 9
        torch.testing.assert_close(model.project_audio(frames) - plain, ((table[7] + table[9]) / 3).expand(3, -1),
                                   atol=1e-5, rtol=1e-4)
    # the user-speech positions carry it, and the text embeddings learn from the speech
    features = [torch.randn(12, 560)]
    n = model.encode_audio(features)[0].shape[0]
    ids = torch.tensor([[layout.im_start] + [layout.context_of_audio] * n + [layout.im_end]])
    model.embed_inputs(ids, audio_features=features).sum().backward()
    assert model.model.get_input_embeddings().weight.grad[[7, 9]].abs().sum() > 0


def test_ctc_embedding_needs_an_encoder_with_a_ctc_head(layout):
    from qinyu.model.presets import preset_config

    config = preset_config("tiny", layout)  # the simple encoder: no CTC head
    config.audio_ctc_embedding = True
    with pytest.raises(ConfigError, match="audio_ctc_embedding needs an audio encoder whose CTC head"):
        QinYuForConditionalGeneration(config)
    with pytest.raises(ConfigError, match="audio_ctc_embedding needs an audio encoder"):
        QinYuConfig(**{**config.to_dict(), "audio_encoder": None})


def _voice_step_model(layout):
    from qinyu.model.presets import preset_config

    config = preset_config("tiny", layout)
    config.speaker_at_audio_steps = True
    torch.manual_seed(0)
    return QinYuForConditionalGeneration(config).eval()


def _spoken_reply(tokenizer, layout, voice: bool, seed: int):
    codes = np.random.default_rng(seed).integers(0, 1024, (8, 4))
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok<|audio|>"}]
    return render(with_voice_prompt(messages) if voice else messages, tokenizer, layout, [AssistantSpeech(codes)])


def test_speaker_at_audio_steps_adds_the_samples_voice_to_each_of_its_audio_steps(layout, tokenizer):
    """Two samples packed in one row, the first with a voice, the second without: the first's
    audio steps carry its projected voice, the second's nothing (its sample has no voice)."""
    model = _voice_step_model(layout)
    a, b = _spoken_reply(tokenizer, layout, True, 0), _spoken_reply(tokenizer, layout, False, 1)
    ids = torch.tensor([a.input_ids + b.input_ids])
    steps = torch.from_numpy(np.concatenate([a.audio_steps, b.audio_steps]))[None].long()
    positions = torch.cat([torch.arange(len(a)), torch.arange(len(b))])[None]
    voice = torch.randn(1, 192)
    with torch.no_grad():
        on = model.embed_inputs(ids, steps, speaker_embeddings=voice, position_ids=positions)
        model.config.speaker_at_audio_steps = False
        off = model.embed_inputs(ids, steps, speaker_embeddings=voice, position_ids=positions)
        projected = model.model.speaker_projection(voice)[0]
    first_steps = torch.zeros(len(ids[0]), dtype=torch.bool)
    first_steps[:len(a)] = torch.from_numpy(a.audio_steps[:, 0] >= 0)
    assert int(first_steps.sum()) > 0 and int((steps[0, len(a):, 0] >= 0).sum()) > 0
    torch.testing.assert_close(on[0, first_steps] - off[0, first_steps], projected.expand(int(first_steps.sum()), -1))
    torch.testing.assert_close(on[0, ~first_steps], off[0, ~first_steps])  # the second sample's steps included


def test_speaker_at_audio_steps_decoding_step_by_step_equals_one_forward(layout, tokenizer):
    """The engine's contract: prefill the prompt, then feed the reply one position at a time
    with the voice as ``step_voices``; logits equal those of the whole sequence at once."""
    model = _voice_step_model(layout)
    seq = _spoken_reply(tokenizer, layout, True, 2)
    ids = torch.tensor([seq.input_ids])
    steps = torch.from_numpy(seq.audio_steps)[None].long()
    voice = torch.randn(1, 192)
    start = int((seq.audio_steps[:, 0] >= 0).argmax()) - 2  # the prompt ends two positions before the speech
    with torch.no_grad():
        whole = model(input_ids=ids, audio_steps=steps, speaker_embeddings=voice).logits[0]
        from transformers import DynamicCache

        cache = DynamicCache()
        model(input_ids=ids[:, :start], audio_steps=steps[:, :start], speaker_embeddings=voice, cache=cache,
              use_cache=True)
        for p in range(start, len(seq)):
            out = model(input_ids=ids[:, p:p + 1], audio_steps=steps[:, p:p + 1], position_ids=torch.tensor([[p]]),
                        cache=cache, use_cache=True, step_voices=[voice[0]])
            cache = out.cache
            torch.testing.assert_close(out.logits[0, -1], whole[p], atol=1e-4, rtol=1e-4)
        # an audio step fed without its voice gives other logits: the check above can fail
        p = int(np.flatnonzero(seq.audio_steps[:, 0] >= 0)[-1])
        alone = [model(input_ids=ids[:, p:p + 1], audio_steps=steps[:, p:p + 1], position_ids=torch.tensor([[p]]),
                       step_voices=[v]).logits[0, -1] for v in (None, voice[0])]
    assert (alone[0] - alone[1]).abs().max() > 1e-3


def test_speaker_at_audio_steps_bad_inputs(layout, tokenizer, tiny):
    from qinyu.model.presets import preset_config

    model = _voice_step_model(layout)
    seq = _spoken_reply(tokenizer, layout, False, 3)
    ids, steps = torch.tensor([seq.input_ids]), torch.from_numpy(seq.audio_steps)[None].long()
    with pytest.raises(InputError, match="step_voices has 2 entries for a batch of 1"):
        model(input_ids=ids, audio_steps=steps, step_voices=[None, None])
    with pytest.raises(InputError, match="step_voices must be 192-d, got 7"):
        model(input_ids=ids, audio_steps=steps, step_voices=[torch.randn(7)])
    with pytest.raises(InputError, match="speaker_at_audio_steps = false"):
        tiny(input_ids=ids, audio_steps=steps, step_voices=[torch.randn(192)])
    config = preset_config("tiny", layout)
    with pytest.raises(ConfigError, match="speaker_at_audio_steps needs use_speaker_embedding"):
        QinYuConfig(**{**config.to_dict(), "speaker_at_audio_steps": True, "use_speaker_embedding": False})
