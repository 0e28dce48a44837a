"""XY-Tokenizer against the reference's outputs on tiny random weights
(shared/parity/xy_tokenizer): front end, encoder stages, codes, decode, long-audio
windows and the VITA-QinYu streaming decode."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qinyu.codec import ChunkedStreamDecoder, CodecError, XYTokenizer, load_codec, official_params
from qinyu.codec.xy_tokenizer import MelFrontEnd, XYTokenizerModel
from qinyu.layout import undo_delay


@pytest.fixture(scope="module")
def xy_dir(parity_dir):
    return parity_dir / "xy_tokenizer"


@pytest.fixture(scope="module")
def golden(xy_dir):
    return load_file(str(xy_dir / "golden.safetensors"))


@pytest.fixture(scope="module")
def tiny_params(xy_dir):
    return json.loads((xy_dir / "config.json").read_text())["tiny_config"]


@pytest.fixture(scope="module")
def official_folder(xy_dir, tiny_params, tmp_path_factory):
    """The golden weights in the official release layout: a torch pickle under
    'generator' plus xy_tokenizer_config.yaml."""
    import yaml

    folder = tmp_path_factory.mktemp("VITA-QinYu-Models")
    torch.save({"generator": load_file(str(xy_dir / "weights.safetensors"))}, folder / "xy_tokenizer.ckpt")
    (folder / "xy_tokenizer_config.yaml").write_text(yaml.safe_dump({"generator_params": tiny_params}))
    return folder


@pytest.fixture(scope="module")
def xy(official_folder):
    codec = load_codec(official_folder)  # detected as an official folder
    assert isinstance(codec, XYTokenizer)
    return codec


def test_interface(xy):
    assert (xy.frame_rate, xy.input_sample_rate, xy.output_sample_rate) == (12.5, 16000, 32000)
    assert xy.samples_per_frame == 2560


def test_front_end_and_encoder_stages(xy, golden, tiny_params):
    mel, lengths = MelFrontEnd(**tiny_params["feature_extractor_kwargs"])([golden["input_short"]])
    assert torch.equal(mel[0], golden["short_mel"])
    assert int(lengths[0]) == int(golden["short_mel_mask"].sum()) == 360
    with torch.no_grad():
        out = xy.model.encode_features(mel, lengths)
    for stage in ("semantic_encoder", "semantic_encoder_adapter", "acoustic_encoder", "pre_rvq_adapter"):
        assert (out[stage][0, :, :180] - golden[f"short_{stage}_out"][:, :180]).abs().max() < 1e-5, stage
    assert (out["downsample"][0, :, :45] - golden["short_downsample_out"][:, :45]).abs().max() < 1e-5


def codes_match(got, want, margin):
    """Exact where the reference's nearest-neighbour margin is >= 1e-4; a flip on a
    near tie is allowed (it only changes later stages of the same frame)."""
    firm = margin >= 1e-4
    assert np.array_equal(got[firm], want[firm])


@pytest.mark.parametrize("clip", ["short", "long"])
def test_encode_matches_reference(xy, golden, clip):
    codes = xy.encode(golden[f"input_{clip}"].numpy(), 16000)
    want = golden[f"{clip}_codes"].numpy()
    assert codes.shape == want.shape == (8, len(golden[f"input_{clip}"]) // 1280)
    margin = golden[f"{clip}_vq_margin"].numpy()[:, :codes.shape[1]]
    codes_match(codes, want, margin)


@pytest.mark.parametrize("clip", ["short", "long"])
def test_decode_matches_reference(xy, golden, clip):
    wav = xy.decode(golden[f"{clip}_codes"].numpy())
    want = golden[f"{clip}_decode_wav"].numpy()
    assert wav.shape == want.shape
    assert np.abs(wav - want).max() < 1e-5


def test_streaming_matches_reference(xy, golden):
    """The LLM emits delayed steps one by one; every finished frame is pushed."""
    codes = undo_delay(golden["stream_token_cache"].numpy())
    stream = ChunkedStreamDecoder(xy)  # defaults: the reference schedule and Hamming cross-fade
    chunks = [c for t in range(codes.shape[1]) if len(c := stream.push(codes[:, t:t + 1]))] + [stream.flush()]
    assert [len(c) for c in chunks] == golden["stream_chunk_samples"].tolist()
    out = np.concatenate(chunks)
    assert np.abs(out - golden["stream_wav_float"].numpy()).max() < 1e-5


def test_smaller_first_chunk(xy, golden):
    codes = golden["long_codes"].numpy()[:, :120]
    stream = ChunkedStreamDecoder(xy, first_chunk=6)
    first = stream.push(codes[:, :6])
    # the first chunk is released as soon as 6 frames exist, less the held-back cross-fade tail
    assert np.array_equal(first, xy.decode(codes[:, :6])[:6 * 2560 - 6400])
    out = np.concatenate([first, stream.push(codes[:, 6:]), stream.flush()])
    assert len(out) == 120 * 2560


def test_batch_decode_equals_single(xy, golden):
    codes = golden["long_codes"].numpy()
    items = [codes[:, :44], codes[:, 100:300], codes[:, 5:6]]
    batch = xy.decode_batch(items)
    for item, got in zip(items, batch):
        assert np.abs(got - xy.decode_batch([item])[0]).max() < 1e-6


def test_bf16_decode_close_to_fp32(official_folder, golden):
    fp32 = XYTokenizer.from_official(official_folder / "xy_tokenizer.ckpt")
    bf16 = XYTokenizer.from_official(official_folder / "xy_tokenizer.ckpt", dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    codes = golden["short_codes"].numpy()
    a, b = fp32.decode(codes), bf16.decode(codes)
    assert b.dtype == np.float32
    snr = 10 * np.log10(np.sum(a ** 2) / np.sum((a - b) ** 2))
    assert snr > 15
    assert np.array_equal(bf16.encode(golden["input_short"].numpy(), 16000).shape, codes.shape)


def test_save_and_load_qinyu_folder(xy, golden, tmp_path):
    xy.save(tmp_path / "xy")
    loaded = load_codec(tmp_path / "xy")
    codes = golden["short_codes"].numpy()
    assert np.array_equal(loaded.decode(codes), xy.decode(codes))


ENCODE_PATH = ("semantic_encoder", "semantic_encoder_adapter", "acoustic_encoder", "pre_rvq_adapter", "downsample")
DECODE_PATH = ("post_rvq_adapter", "upsample", "acoustic_decoder", "enhanced_vocos")


def test_official_sizes_on_meta(xy_dir):
    """Counts per module as the reference reports them (parity config.json)."""
    reference = json.loads((xy_dir / "config.json").read_text())["official_param_count"]
    with torch.device("meta"):
        model = XYTokenizerModel(official_params("32k"))

    def params(names):
        return sum(p.numel() for n in names for p in getattr(model, n).parameters())

    assert sum(p.numel() for p in model.parameters()) == reference["parameters_total"] == 519_949_394
    assert sum(b.numel() for b in model.buffers()) == reference["buffers_total"] == 14_446_088
    # the quantiser's input projection belongs to encoding, its output projection to decoding
    q = model.quantizer
    assert params(ENCODE_PATH) + sum(p.numel() for p in q.input_proj.parameters()) == \
        reference["encode_path_parameters"] == 261_776_128
    assert params(DECODE_PATH) + sum(p.numel() for p in q.output_proj.parameters()) == \
        reference["decode_path_parameters"] == 258_173_266
    for name, counts in reference["per_module"].items():
        module = getattr(model, name)
        assert sum(p.numel() for p in module.parameters()) == counts["parameters"], name
        assert sum(b.numel() for b in module.buffers()) == counts["buffers"], name
    # key set: the official prefixes and inner names (the golden weights carry the same set at tiny size)
    golden_keys = set(load_file(str(xy_dir / "weights.safetensors")))
    tiny = json.loads((xy_dir / "config.json").read_text())["tiny_config"]
    with torch.device("meta"):
        assert set(XYTokenizerModel(tiny).state_dict()) == golden_keys
    import re
    pattern = {re.sub(r"\.\d+\.", ".N.", k) for k in model.state_dict()}
    assert pattern == {re.sub(r"\.\d+\.", ".N.", k) for k in golden_keys}
    for variant, (rate, n_fft) in {"16k": (16000, 640), "24k": (24000, 960)}.items():
        params = official_params(variant)
        assert params["output_sample_rate"] == rate and params["vocos_kwargs"]["n_fft"] == n_fft
        assert params["output_sample_rate"] / params["decoder_upsample_rate"] == 12.5


def test_16k_variant_decodes_at_its_rate(tiny_params):
    params = json.loads(json.dumps(tiny_params))
    params.update(output_sample_rate=16000, decoder_upsample_rate=1280)
    params["vocos_kwargs"].update(n_fft=640, hop_size=160)
    torch.manual_seed(0)
    codec = XYTokenizer(params)
    wav = codec.decode(np.zeros((8, 5), dtype=np.int64))
    assert codec.output_sample_rate == 16000 and wav.shape == (5 * 1280,)


def test_missing_files_are_named(tmp_path, official_folder):
    with pytest.raises(CodecError, match=r"XY-Tokenizer weights not found: .*xy_tokenizer.ckpt\. VITA-QinYu-Models"):
        XYTokenizer.from_official(tmp_path / "xy_tokenizer.ckpt")
    (tmp_path / "xy_tokenizer.ckpt").write_bytes((official_folder / "xy_tokenizer.ckpt").read_bytes())
    with pytest.raises(CodecError, match="xy_tokenizer_config.yaml .*ships beside xy_tokenizer.ckpt"):
        XYTokenizer.from_official(tmp_path / "xy_tokenizer.ckpt")


def test_bad_codes_and_audio(xy):
    with pytest.raises(CodecError, match="out of range at codebook 0, frame 0: 1024"):
        xy.decode(np.full((8, 3), 1024))
    assert xy.decode(np.zeros((8, 0), dtype=np.int64)).size == 0
    assert xy.encode(np.zeros(800, dtype=np.float32), 16000).shape == (8, 0)  # under one frame: no codes
