"""SimpleAudioEncoder's from-scratch options (qinyu-nano): per-utterance mean
normalisation, the depthwise convolution and learned positions."""

import pytest
import torch

from qinyu.model.audio_encoder import SimpleAudioEncoder

NANO = dict(input_size=12, hidden_size=16, num_layers=2, num_heads=2, output_size=8, utterance_cmn=True,
            conv_kernel=3, max_positions=32)


def encoder(**kw):
    torch.manual_seed(0)
    return SimpleAudioEncoder(**{**NANO, **kw}).eval()


def test_padding_does_not_change_an_utterance():
    enc = encoder()
    x = torch.randn(1, 7, 12)
    alone, _ = enc(x, torch.tensor([7]))
    padded = torch.cat([x, torch.randn(1, 5, 12) * 100], dim=1)  # garbage in the padding
    batch = torch.cat([padded, torch.randn(1, 12, 12)])
    out, lengths = enc(batch, torch.tensor([7, 12]))
    assert lengths.tolist() == [7, 12]
    torch.testing.assert_close(out[0, :7], alone[0], atol=1e-5, rtol=1e-5)


def test_utterance_cmn_ignores_a_constant_offset_and_without_it_not():
    x = torch.randn(1, 9, 12)
    offset = torch.randn(1, 1, 12) * 3
    with_cmn = encoder()
    torch.testing.assert_close(with_cmn(x + offset, torch.tensor([9]))[0], with_cmn(x, torch.tensor([9]))[0],
                               atol=1e-4, rtol=1e-4)
    plain = encoder(utterance_cmn=False)
    assert not torch.allclose(plain(x + offset, torch.tensor([9]))[0], plain(x, torch.tensor([9]))[0], atol=1e-3)


def test_positions_make_order_matter_and_have_a_limit():
    x = torch.randn(1, 6, 12)
    flipped = x.flip(1)
    enc = encoder(conv_kernel=0)
    out, flip_out = enc(x, torch.tensor([6]))[0], enc(flipped, torch.tensor([6]))[0]
    assert not torch.allclose(out.flip(1), flip_out, atol=1e-3)  # a bag of frames would be equal
    with pytest.raises(ValueError, match="exceed the encoder's 32 positions"):
        enc(torch.randn(1, 33, 12), torch.tensor([33]))


def test_defaults_keep_the_original_encoder():
    enc = SimpleAudioEncoder(input_size=12, hidden_size=16, num_layers=1, num_heads=2, output_size=8)
    names = {n.split(".")[0] for n, _ in enc.named_parameters()}
    assert names == {"input_proj", "layers", "output_proj"}
    with pytest.raises(ValueError, match="odd"):
        SimpleAudioEncoder(conv_kernel=4)
