import pytest
import torch

from qinyu.data.dataset import collate_packs, read_prepared, render_prepared
from qinyu.layout import TokenLayout, byte_tokenizer
from qinyu.model import QinYuForConditionalGeneration, preset_config
from qinyu.model.packed_attention import PackedAttentionError, packed_attention_forward, span_bounds, \
    use_packed_attention

from ..data.synthetic import write_prepared

INPUTS = ("input_ids", "position_ids", "audio_steps", "audio_features", "speaker_embeddings", "labels",
          "audio_labels")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    torch.manual_seed(0)
    model = QinYuForConditionalGeneration(preset_config("tiny", layout))
    path = write_prepared(tmp_path_factory.mktemp("data"), n=9)
    items = [render_prepared(s, tok, layout, model.audio_encoder.output_frames, [[1, 8], [4, 8]])
             for s in read_prepared(path)]
    return layout, model, items


def test_span_bounds_from_position_restarts():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3],
                              [0, 1, 2, 3, 4, 5, 0, 1, 2]])
    assert span_bounds(positions) == [[(0, 3), (3, 5), (5, 9)], [(0, 6), (6, 9)]]
    with pytest.raises(PackedAttentionError, match="start a sample at position 0"):
        span_bounds(torch.tensor([[1, 2, 0, 1]]))


def test_collated_padding_is_one_span(setup):
    layout, _, items = setup
    batch = collate_packs([[items[0], items[1]], [items[2]]], layout.im_end, mask=False)
    assert batch["attention_mask"] is None
    n0, n1, n2 = len(items[0]), len(items[1]), len(items[2])
    assert span_bounds(batch["position_ids"]) == [[(0, n0), (n0, n0 + n1)], [(0, n2), (n2, n0 + n1)]]


@pytest.mark.parametrize("kernel", ["sdpa", "math"])
def test_packed_attention_matches_the_block_diagonal_mask(setup, kernel):
    """Outputs at every real position and the gradients of the loss are those of SDPA under
    the pack's block-diagonal mask; the padding span's outputs are never read."""
    layout, model, items = setup
    packs = [[items[0], items[1], items[2]], [items[4], items[3]]]
    masked = collate_packs(packs, layout.im_end)
    unmasked = collate_packs(packs, layout.im_end, mask=False)
    length = masked["input_ids"].shape[1]
    real = torch.tensor([[p < sum(map(len, pack)) for p in range(length)] for pack in packs])  # not the padding
    results = []
    for batch, packed in ((masked, False), (unmasked, True)):
        model.zero_grad()
        use_packed_attention(model, packed, kernel)
        out = model(**{k: batch[k] for k in INPUTS}, attention_mask=batch["attention_mask"])
        out.loss.backward()
        results.append((out.hidden_states[real], out.loss.detach(),
                        model.model.layers[0].self_attn.q_proj.weight.grad.clone()))
    use_packed_attention(model, False)
    (h_mask, loss_mask, grad_mask), (h_packed, loss_packed, grad_packed) = results
    torch.testing.assert_close(h_packed, h_mask, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss_packed, loss_mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad_packed, grad_mask, atol=1e-6, rtol=1e-4)
    assert model.model.config._attn_implementation == model.config.attn_implementation


def test_packed_attention_refuses_what_it_cannot_do():
    q = torch.randn(1, 4, 6, 8)
    with pytest.raises(PackedAttentionError, match="position ids"):
        packed_attention_forward(None, q, q, q)
    with pytest.raises(PackedAttentionError, match="no cache"):
        packed_attention_forward(None, q[:, :, :1], q, q, position_ids=torch.arange(1)[None])
    with pytest.raises(PackedAttentionError, match="kernel must be one of"):
        use_packed_attention(None, True, "flash")
