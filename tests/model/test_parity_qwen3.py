"""The 8B model class against the reference's outputs on tiny random weights
(shared/parity/qwen3_tiny_*): injections, hidden states, logits, every loss term."""

import json

import pytest
import torch
from safetensors.torch import load_file

from qinyu.layout import TokenLayout, load_tokenizer
from qinyu.model import QinYuForConditionalGeneration
from qinyu.model.official import config_from_official

CASES = ["s2s_interleaved", "multiturn_audio_only", "text_tool_call"]


@pytest.fixture(scope="module")
def golden(parity_dir):
    return json.loads((parity_dir / "qwen3_tiny_golden.json").read_text())


@pytest.fixture(scope="module")
def model(parity_dir):
    folder = parity_dir / "official_qwen3_tiny"
    layout = TokenLayout.from_tokenizer(load_tokenizer(folder))
    config = config_from_official(json.loads((folder / "config.json").read_text()), layout)
    config.attn_implementation = "eager"
    m = QinYuForConditionalGeneration(config)
    m.load_checkpoint_state(load_file(str(parity_dir / "qwen3_tiny_weights.safetensors")))
    return m.eval()


def model_inputs(t, layout):
    """Reference batch tensors -> qinyu's per-position audio arrays."""
    ids = t["input_ids"]
    steps = torch.full((*ids.shape, 8), -1, dtype=torch.long)
    audio_labels = torch.full((*ids.shape, 8), -100, dtype=torch.long)
    if "audio_labels" in t:
        positions = torch.cat([torch.arange(s, e) for s, e in zip(t["audio_token_starts"][0].tolist(),
                                                                    t["audio_token_ends"][0].tolist())])
        steps[0, positions] = t["audio_labels"][0].T
        audio_labels[0, positions] = t["audio_labels"][0].T
    audio_embeds = [t[k] for k in sorted(k for k in t if k.startswith("audio_encoder_output."))]
    return dict(input_ids=ids, position_ids=t["position_ids"], audio_steps=steps, audio_embeds=audio_embeds or None,
                speaker_embeddings=t.get("speaker_embeddings"), labels=t["labels"].clone(), audio_labels=audio_labels)


@pytest.mark.parametrize("case", CASES)
def test_qwen3_class_matches_reference(parity_dir, golden, model, case):
    t = load_file(str(parity_dir / f"qwen3_tiny_case_{case}.safetensors"))
    inputs = model_inputs(t, model.layout)
    with torch.no_grad():
        embeds = model.embed_inputs(inputs["input_ids"], inputs["audio_steps"], audio_embeds=inputs["audio_embeds"],
                                    speaker_embeddings=inputs["speaker_embeddings"])
        out = model(**inputs)
    torch.testing.assert_close(embeds, t["inputs_embeds"], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.hidden_states, t["last_hidden_state"], atol=2e-5, rtol=0)
    torch.testing.assert_close(out.logits, t["logits"], atol=5e-5, rtol=0)
    ref = golden["cases"][case]["results_fp32_eager"]
    assert out.loss.item() == pytest.approx(ref["loss"], abs=2e-5)
    assert out.text_loss.item() == pytest.approx(ref["ce_loss_text"], abs=2e-5)
    assert out.audio_loss.item() == pytest.approx(ref["ce_loss_audio"], abs=2e-5)
    assert out.audio_loss_per_codebook.tolist() == pytest.approx(ref["ce_loss_audio_per_codebook_q1_to_q7"]
                                                                 if case != "text_tool_call" else [], abs=2e-5)
    # the labels we passed are not modified (the reference mutates them in place)
    assert torch.equal(inputs["labels"], t["labels"])


@pytest.mark.parametrize("case", CASES)
def test_num_items_in_batch_variant(parity_dir, golden, model, case):
    t = load_file(str(parity_dir / f"qwen3_tiny_case_{case}.safetensors"))
    ref = golden["cases"][case]["results_with_num_items_in_batch"]
    with torch.no_grad():
        out = model(**model_inputs(t, model.layout), num_items_in_batch=ref["num_items_in_batch"])
    assert out.loss.item() == pytest.approx(ref["loss"], abs=2e-5)
    assert out.audio_loss.item() == pytest.approx(ref["ce_loss_audio"], abs=2e-5)


def test_sdpa_matches_eager(parity_dir, model):
    t = load_file(str(parity_dir / "qwen3_tiny_case_s2s_interleaved.safetensors"))
    folder = parity_dir / "official_qwen3_tiny"
    cfg = config_from_official(json.loads((folder / "config.json").read_text()), model.layout)
    cfg.attn_implementation = "sdpa"
    sdpa = QinYuForConditionalGeneration(cfg)
    sdpa.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = sdpa.eval()(**model_inputs(t, model.layout))
    torch.testing.assert_close(out.logits, t["logits"], atol=5e-5, rtol=0)
