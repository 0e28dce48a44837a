import pytest
import torch
import torch.nn.functional as F

from qinyu.data.dataset import collate_packs, read_prepared, render_prepared
from qinyu.layout import TokenLayout, byte_tokenizer
from qinyu.model import QinYuForConditionalGeneration, preset_config
from qinyu.model.packed_attention import PackedAttentionError, causal_attention, grouped_attention, masked_attention, \
    packed_attention_forward, span_bounds, span_groups, use_packed_attention

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


@pytest.mark.parametrize("kernel", ["sdpa", "math", "grouped"])
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


def test_span_groups_keep_like_lengths_together():
    groups = span_groups([20, 3, 18, 5, 17, 100, 16, 2])
    assert groups == [[5], [0, 2, 4, 6], [3, 1, 7]]  # 20 <= 1.25 * 16; short spans share GROUP_MIN_LENGTH
    assert sorted(i for g in groups for i in g) == list(range(8))


def test_grouped_attention_pads_like_spans_and_matches_one_span_at_a_time():
    """Spans padded together (lengths 20, 18, 17, 16 in one product, 11, 5, 3, 2 in another),
    with grouped-query attention: the outputs and gradients of one product per span."""
    torch.manual_seed(0)
    spans = [[(0, 20), (20, 38), (38, 43), (43, 46)], [(0, 17), (17, 33), (33, 44), (44, 46)]]
    q0 = torch.randn(2, 4, 46, 8, requires_grad=True)
    k0, v0 = (torch.randn(2, 2, 46, 8, requires_grad=True) for _ in range(2))
    grouped = grouped_attention(q0, k0, v0, spans, scale=0.3)  # [B, L, H, D]
    expected = torch.stack([torch.cat([causal_attention(q0[r:r + 1, :, s:e], k0[r:r + 1, :, s:e], v0[r:r + 1, :, s:e],
                                                        0.3, "math") for s, e in spans[r]], dim=2)[0]
                            for r in range(2)]).transpose(1, 2)
    torch.testing.assert_close(grouped, expected, atol=1e-6, rtol=1e-5)
    weights = torch.randn_like(grouped)
    grads = [torch.autograd.grad((out * weights).sum(), (q0, k0, v0)) for out in (grouped, expected)]
    for g, e in zip(*grads):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mask_shape", ["one for all", "one per batch item"])
def test_masked_attention_is_sdpa_with_that_mask(mask_shape):
    """The explicit kernel (query heads stacked per key/value head, additive mask) against
    torch's SDPA with grouped-query heads and the same boolean mask: outputs and gradients."""
    torch.manual_seed(0)
    q0 = torch.randn(3, 6, 7, 8, requires_grad=True)
    k0, v0 = (torch.randn(3, 2, 7, 8, requires_grad=True) for _ in range(2))
    hidden = torch.ones(7, 7, dtype=torch.bool).triu(1)
    if mask_shape == "one per batch item":
        padding = torch.arange(7)[None, None, None, :] >= torch.tensor([7, 5, 2])[:, None, None, None]
        hidden = hidden[None, None] | padding  # [3, 1, 7, 7]: keys past each item's length
    ours = masked_attention(q0, k0, v0, hidden, scale=0.4)
    theirs = F.scaled_dot_product_attention(q0, k0, v0, attn_mask=~hidden, scale=0.4, enable_gqa=True)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    weights = torch.randn_like(ours)
    grads = [torch.autograd.grad((out * weights).sum(), (q0, k0, v0)) for out in (ours, theirs)]
    for g, e in zip(*grads):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_packed_attention_refuses_what_it_cannot_do():
    q = torch.randn(1, 4, 6, 8)
    with pytest.raises(PackedAttentionError, match="position ids"):
        packed_attention_forward(None, q, q, q)
    with pytest.raises(PackedAttentionError, match="no cache"):
        packed_attention_forward(None, q[:, :, :1], q, q, position_ids=torch.arange(1)[None])
    with pytest.raises(PackedAttentionError, match="kernel must be one of"):
        use_packed_attention(None, True, "flash")
