"""Both official model classes against the reference's outputs on tiny random weights
(shared/parity/{qwen3,utu}_tiny_*): the golden weights are read through the same code
path as an official folder; injections, hidden states, logits and every loss term."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from qinyu.model import QinYuForConditionalGeneration
from qinyu.model.checkpoint import convert_official

CASES = ["s2s_interleaved", "multiturn_audio_only", "text_tool_call"]
FAMILIES = ["qwen3", "utu"]


@pytest.fixture(scope="module")
def golden(parity_dir):
    return {f: json.loads((parity_dir / f"{f}_tiny_golden.json").read_text()) for f in FAMILIES}


def official_folder(parity_dir, family, tmp_path_factory):
    """An official folder whose weights are the golden weight file."""
    src = parity_dir / f"official_{family}_tiny"
    dst = tmp_path_factory.mktemp(f"official_{family}")
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    shutil.copy(parity_dir / f"{family}_tiny_weights.safetensors", dst / "model.safetensors")
    return dst


@pytest.fixture(scope="module")
def folders(parity_dir, tmp_path_factory):
    return {f: official_folder(parity_dir, f, tmp_path_factory) for f in FAMILIES}


@pytest.fixture(scope="module")
def models(folders):
    out = {}
    for family, folder in folders.items():
        for attn in ("eager", "sdpa"):
            out[family, attn] = QinYuForConditionalGeneration.from_pretrained(folder, attn_implementation=attn)
    return out


def model_inputs(t):
    """Reference batch tensors -> qinyu's per-position audio arrays."""
    ids = t["input_ids"]
    steps = torch.full((*ids.shape, 8), -1, dtype=torch.long)
    if "audio_labels" in t:
        positions = torch.cat([torch.arange(s, e) for s, e in zip(t["audio_token_starts"][0].tolist(),
                                                                    t["audio_token_ends"][0].tolist())])
        steps[0, positions] = t["audio_labels"][0].T
    audio_embeds = [t[k] for k in sorted(k for k in t if k.startswith("audio_encoder_output."))]
    return dict(input_ids=ids, position_ids=t["position_ids"], audio_steps=steps, audio_embeds=audio_embeds or None,
                speaker_embeddings=t.get("speaker_embeddings"), labels=t["labels"].clone(),
                audio_labels=torch.where(steps >= 0, steps, -100))


def golden_logits(t, model):
    if "logits" in t:
        return t["logits"]
    # 4B sets store logits for one case only; the rest are hidden @ tied embeddings
    return t["last_hidden_state"] @ model.model.embed_tokens.weight.T


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_matches_reference(parity_dir, golden, models, family, case, attn):
    model = models[family, attn]
    t = load_file(str(parity_dir / f"{family}_tiny_case_{case}.safetensors"))
    inputs = model_inputs(t)
    with torch.no_grad():
        embeds = model.embed_inputs(inputs["input_ids"], inputs["audio_steps"], audio_embeds=inputs["audio_embeds"],
                                    speaker_embeddings=inputs["speaker_embeddings"])
        out = model(**inputs)
    assert (embeds - t["inputs_embeds"]).abs().max() <= 1e-4
    assert (out.hidden_states - t["last_hidden_state"]).abs().max() <= 1e-4
    assert (out.logits - golden_logits(t, model)).abs().max() <= 1e-4
    ref = golden[family]["cases"][case]["results_fp32_eager"]
    assert rel(out.loss.item(), ref["loss"]) <= 1e-5
    assert rel(out.text_loss.item(), ref["ce_loss_text"]) <= 1e-5
    if case == "text_tool_call":
        assert out.audio_loss.item() == ref["ce_loss_audio"] == 0
    else:
        assert rel(out.audio_loss.item(), ref["ce_loss_audio"]) <= 1e-5
        for got, want in zip(out.audio_loss_per_codebook.tolist(), ref["ce_loss_audio_per_codebook_q1_to_q7"],
                             strict=True):
            assert rel(got, want) <= 1e-5
    assert torch.equal(inputs["labels"], t["labels"])  # the reference mutates labels in place; we do not


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("family", FAMILIES)
def test_num_items_in_batch_variant(parity_dir, golden, models, family, case):
    t = load_file(str(parity_dir / f"{family}_tiny_case_{case}.safetensors"))
    ref = golden[family]["cases"][case]["results_with_num_items_in_batch"]
    with torch.no_grad():
        out = models[family, "eager"](**model_inputs(t), num_items_in_batch=ref["num_items_in_batch"])
    assert rel(out.loss.item(), ref["loss"]) <= 1e-5
    assert rel(out.text_loss.item(), ref["ce_loss_text"]) <= 1e-5


def test_config_mapping(models):
    q, u = models["qwen3", "eager"], models["utu", "eager"]
    assert q.config.backbone["model_type"] == "qwen3" and not q.tied
    assert isinstance(q.model.audio_projection.pre_proj_layernorm, torch.nn.LayerNorm)
    assert u.config.backbone["model_type"] == "youtu" and u.tied
    assert u.lm_head.weight is u.model.embed_tokens.weight
    # MLA has no key-value grouping: the 4B's nominal kv-head count is overridden
    assert u.config.backbone["num_key_value_heads"] == u.config.backbone["num_attention_heads"] == 4
    for proj in (u.model.audio_projection, u.model.speaker_projection):
        assert isinstance(proj.pre_proj_layernorm, torch.nn.RMSNorm) and proj.pre_proj_layernorm.eps is None


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_path(parity_dir, golden, folders, family):
    model = QinYuForConditionalGeneration.from_pretrained(folders[family], dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    t = load_file(str(parity_dir / f"{family}_tiny_case_s2s_interleaved.safetensors"))
    inputs = model_inputs(t)
    inputs["audio_embeds"] = [e.bfloat16() for e in inputs["audio_embeds"]]
    with torch.no_grad():
        out = model(**inputs)
    ref = golden[family]["cases"]["s2s_interleaved"]["results_fp32_eager"]
    # bf16 weights and activations; the loss itself is computed in fp32
    assert abs(out.loss.item() - ref["loss"]) < 0.2
    assert (out.logits.float() - golden_logits(t, model).float()).abs().max() < 0.3


@pytest.mark.parametrize("family", FAMILIES)
def test_convert_then_load_matches(parity_dir, folders, family, tmp_path, capsys):
    from qinyu.cli import main

    assert main(["convert", "--official", str(folders[family]), "--out", str(tmp_path / "q")]) == 0
    official = QinYuForConditionalGeneration.from_pretrained(folders[family])
    converted = QinYuForConditionalGeneration.from_pretrained(tmp_path / "q")
    assert json.loads((tmp_path / "q" / "config.json").read_text())["model_type"] == "qinyu"
    t = load_file(str(parity_dir / f"{family}_tiny_case_multiturn_audio_only.safetensors"))
    with torch.no_grad():
        assert torch.equal(official(**model_inputs(t)).logits, converted(**model_inputs(t)).logits)
    assert main(["info", str(folders[family])]) == 0
    assert "official VITA-QinYu" in capsys.readouterr().out


# -- bad official folders ---------------------------------------------------------

def sharded_copy(folder, dst):
    """The same weights split into two shards with an index, as released checkpoints are."""
    dst.mkdir()
    for f in folder.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    state = load_file(str(folder / "model.safetensors"))
    keys = sorted(state)
    half = len(keys) // 2
    parts = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in parts.items():
        save_file({k: state[k] for k in ks}, str(dst / name))
    index = {"metadata": {}, "weight_map": {k: name for name, ks in parts.items() for k in ks}}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    return dst


def test_sharded_official_folder_loads(folders, tmp_path):
    sharded = sharded_copy(folders["qwen3"], tmp_path / "sharded")
    a = QinYuForConditionalGeneration.from_pretrained(sharded)
    b = QinYuForConditionalGeneration.from_pretrained(folders["qwen3"])
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_missing_shard_is_named(folders, tmp_path):
    from qinyu.model import CheckpointError

    sharded = sharded_copy(folders["qwen3"], tmp_path / "sharded")
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002.safetensors listed in .* is missing"):
        QinYuForConditionalGeneration.from_pretrained(sharded)


def test_wrong_shape_is_named(folders, tmp_path):
    from qinyu.model import CheckpointError

    sharded = sharded_copy(folders["utu"], tmp_path / "sharded")
    shard = sharded / "model-00001-of-00002.safetensors"
    state = load_file(str(shard))
    key = sorted(state)[0]
    state[key] = torch.zeros(3, 3)
    save_file(state, str(shard))
    with pytest.raises(CheckpointError, match=f"model-00001-of-00002.safetensors: weight {key} has shape \\(3, 3\\)"):
        QinYuForConditionalGeneration.from_pretrained(sharded)


def test_unknown_model_type_is_named(folders, tmp_path):
    from qinyu.model import CheckpointError

    dst = tmp_path / "x"
    shutil.copytree(folders["qwen3"], dst)
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen3_omni"}))
    with pytest.raises(CheckpointError, match="config.json: unknown model_type 'qwen3_omni'"):
        QinYuForConditionalGeneration.from_pretrained(dst)


def test_tokenizer_without_audio_tokens_is_named(folders, tmp_path):
    from tokenizers import Tokenizer, models

    from qinyu.model import CheckpointError

    dst = tmp_path / "x"
    shutil.copytree(folders["qwen3"], dst)
    Tokenizer(models.WordLevel(vocab={"a": 0, "<unk>": 1}, unk_token="<unk>")).save(str(dst / "tokenizer.json"))
    with pytest.raises(CheckpointError, match=r"tokenizer.json: token '<\|audio_0_0\|>' is missing"):
        QinYuForConditionalGeneration.from_pretrained(dst)


def test_convert_brings_companions(parity_dir, folders, tmp_path):
    """--sensevoice/--campplus/--xy make the converted checkpoint complete: its config
    names the CMVN, the speaker encoder and the codec, and the codec loads from it."""
    import yaml

    from qinyu.cli import main
    from qinyu.codec import XYTokenizer, codec_for_checkpoint

    xy = tmp_path / "VITA-QinYu-Models"
    xy.mkdir()
    torch.save(load_file(str(parity_dir / "xy_tokenizer" / "weights.safetensors")), xy / "xy_tokenizer.ckpt")
    tiny = json.loads((parity_dir / "xy_tokenizer" / "config.json").read_text())["tiny_config"]
    (xy / "xy_tokenizer_config.yaml").write_text(yaml.safe_dump({"generator_params": tiny}))
    (tmp_path / "campplus_cn_common.bin").write_bytes(b"weights")
    out = tmp_path / "q"
    assert main(["convert", "--official", str(folders["qwen3"]), "--out", str(out),
                 "--sensevoice", str(parity_dir / "sensevoice"), "--campplus", str(tmp_path / "campplus_cn_common.bin"),
                 "--xy", str(xy)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["cmvn"], cfg["speaker_encoder"]) == ("am.mvn", "campplus_cn_common.bin")
    assert cfg["codec"] == {"type": "xy_tokenizer", "path": "codec"}
    assert (out / "am.mvn").read_bytes() == (parity_dir / "sensevoice" / "am.mvn").read_bytes()
    assert isinstance(codec_for_checkpoint(out), XYTokenizer)
    assert main(["convert", "--official", str(folders["qwen3"]), "--out", str(tmp_path / "q2"),
                 "--xy", str(tmp_path)]) == 2  # no xy_tokenizer.ckpt there
