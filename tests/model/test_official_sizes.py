"""The real 8B and 4B configs build on the meta device (no weights, no memory) with the
official parameter counts and key sets of the language model and projectors. Counts
are computed here by hand from the published shapes (reference facts §2.5, §3)."""

import re

import pytest
import torch

from qinyu.layout import TokenLayout, qwen3_shaped_tokenizer
from qinyu.layout.vocab import extend_tokenizer
from qinyu.model import QinYuForConditionalGeneration
from qinyu.model.official import config_from_official

OFFICIAL_8B = {
    "model_type": "qwen3_sensevoice_xy", "vocab_size": 159960, "hidden_size": 4096, "intermediate_size": 12288,
    "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 40960, "rope_theta": 1000000, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "hidden_act": "silu", "attention_bias": False, "use_sliding_window": False, "num_nextn_predict_layers": 0,
    "num_codebook": 8, "codebook_size": 1032, "use_audio_heads": False, "audio_projection_norm_type": "layer_norm",
    "use_speaker_embedding": True, "speaker_embedding_size": 192, "bos_token_id": 151643, "eos_token_id": 151645,
}
OFFICIAL_4B = {
    "model_type": "vita_utu_v1", "vocab_size": 136544, "hidden_size": 2560, "intermediate_size": 9728,
    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "qk_head_dim": 192, "rope_interleave": True, "first_k_dense_replace": 40, "rope_theta": 500000,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
    "num_nextn_predict_layers": 0, "audio_projection_norm_type": "rms_norm", "use_speaker_embedding": True,
    "speaker_embedding_size": 192, "bos_token_id": 128000, "eos_token_id": 128001,
}


def youtu_shaped_tokenizer():
    """A Youtu-shaped base: 128,000 BPE entries, 256 Llama-3-style specials, then
    <|im_start|>/<|im_end|> at 128256/128257 (layout (B) of the reference facts)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {f"t{i}": i for i in range(1, 128000)} | {"[UNK]": 0}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = [f"<|reserved_special_token_{i}|>" for i in range(256)] + ["<|im_start|>", "<|im_end|>"]
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    return extend_tokenizer(tok)


def build(raw, tokenizer):
    config = config_from_official(raw, TokenLayout.from_tokenizer(tokenizer))
    with torch.device("meta"):
        return QinYuForConditionalGeneration(config)


def count(model):
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def key_patterns(model):
    return sorted({re.sub(r"layers\.\d+\.", "layers.N.", k) for k in model.state_dict()})


def test_8b_builds_with_official_count_and_keys():
    tok = qwen3_shaped_tokenizer()
    assert TokenLayout.from_tokenizer(tok).vocab_size == 159960
    model = build(OFFICIAL_8B, tok)
    H, F, V, L = 4096, 12288, 159960, 36
    layer = 2 * H * H + 2 * 1024 * H + 2 * 128 + 3 * H * F + 2 * H
    projectors = (2 * 512 + H * 512 + H * H) + (2 * 192 + H * 192 + H * H)
    assert count(model) == 2 * V * H + L * layer + H + projectors == 8_292_907_392
    assert key_patterns(model) == sorted([
        "lm_head.weight", "model.embed_tokens.weight", "model.norm.weight",
        *(f"model.layers.N.self_attn.{p}_proj.weight" for p in "qkvo"),
        "model.layers.N.self_attn.q_norm.weight", "model.layers.N.self_attn.k_norm.weight",
        *(f"model.layers.N.mlp.{p}_proj.weight" for p in ("gate", "up", "down")),
        "model.layers.N.input_layernorm.weight", "model.layers.N.post_attention_layernorm.weight",
        "model.audio_projection.pre_proj_layernorm.weight", "model.audio_projection.pre_proj_layernorm.bias",
        "model.audio_projection.mlp.0.weight", "model.audio_projection.mlp.2.weight",
        "model.speaker_projection.pre_proj_layernorm.weight", "model.speaker_projection.pre_proj_layernorm.bias",
        "model.speaker_projection.mlp.0.weight", "model.speaker_projection.mlp.2.weight",
    ])
    sd = model.state_dict()
    assert sd["model.embed_tokens.weight"].shape == sd["lm_head.weight"].shape == (159960, 4096)


def test_4b_builds_with_official_count_and_keys():
    tok = youtu_shaped_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    assert (layout.audio_base, layout.user_speaker, layout.vocab_size) == (128280, 136541, 136544)
    model = build(OFFICIAL_4B, tok)
    H, F, V, L = 2560, 9728, 136544, 40
    attn = 1536 * H + 1536 + 32 * 192 * 1536 + 576 * H + 512 + 32 * 256 * 512 + H * 32 * 128
    layer = attn + 3 * H * F + 2 * H
    projectors = (512 + H * 512 + H * H) + (192 + H * 192 + H * H)
    assert count(model) == V * H + L * layer + H + projectors == 4_534_152_384
    sd = model.state_dict()
    shapes = {k: tuple(sd[f"model.layers.0.self_attn.{k}.weight"].shape)
              for k in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj")}
    assert shapes == {"q_a_proj": (1536, 2560), "q_b_proj": (6144, 1536), "kv_a_proj_with_mqa": (576, 2560),
                      "kv_b_proj": (8192, 512), "o_proj": (2560, 4096)}
    keys = set(key_patterns(model)) - {"lm_head.weight"}  # tied: not stored
    assert {k for k in keys if "self_attn" in k} == {
        f"model.layers.N.self_attn.{p}.weight" for p in
        ("q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj")}
    assert "model.audio_projection.pre_proj_layernorm.bias" not in keys  # RMSNorm, weight only
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_official_folder_with_audio_model_needs_sensevoice():
    tok = qwen3_shaped_tokenizer()
    config = config_from_official(OFFICIAL_8B, TokenLayout.from_tokenizer(tok), has_audio_model=True)
    assert config.audio_encoder == {"type": "sensevoice", "keep_query_frames": True}
    cfg4 = config_from_official(OFFICIAL_4B, TokenLayout.from_tokenizer(youtu_shaped_tokenizer()), True)
    assert cfg4.audio_encoder == {"type": "sensevoice", "keep_query_frames": False}
