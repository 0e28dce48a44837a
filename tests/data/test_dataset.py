import numpy as np
import pytest
import torch

from qinyu.data.dataset import PackedData, collate_packs, first_fit, read_prepared, render_prepared
from qinyu.layout import TokenLayout, byte_tokenizer
from qinyu.model import QinYuForConditionalGeneration, preset_config

from .synthetic import write_prepared


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    torch.manual_seed(0)
    model = QinYuForConditionalGeneration(preset_config("tiny", layout)).eval()
    path = write_prepared(tmp_path_factory.mktemp("data"), n=9)
    items = [render_prepared(s, tok, layout, model.audio_encoder.output_frames, [[1, 8], [4, 8]])
             for s in read_prepared(path)]
    return tok, layout, model, items


def test_render_prepared_places_voice_and_speakers(setup):
    tok, layout, _, items = setup
    speech_chat = items[0]  # user speech + interleaved reply + voice
    ids = speech_chat.seq.input_ids
    assert ids.count(layout.speaker) == 1 and ids.count(layout.user_speaker) == 1
    assert len(speech_chat.speakers) == 2 and len(speech_chat.features) == 1
    asr = items[2]  # no voice vector: no <|speaker|> in the system prompt
    assert layout.speaker not in asr.seq.input_ids and len(asr.speakers) == 1


def test_pack_isolation(setup):
    """Changing one sample of a pack leaves the other samples' logits unchanged."""
    tok, layout, model, items = setup
    pad = layout.im_end
    with torch.no_grad():
        a = model(**{k: v for k, v in collate_packs([[items[0], items[1], items[2]]], pad).items()
                     if k not in ("num_tokens", "labels", "audio_labels")}).logits
        b = model(**{k: v for k, v in collate_packs([[items[0], items[4], items[2]]], pad).items()
                     if k not in ("num_tokens", "labels", "audio_labels")}).logits
        alone = model(**{k: v for k, v in collate_packs([[items[2]]], pad).items()
                         if k not in ("num_tokens", "labels", "audio_labels")}).logits
    n0, n1, n4 = len(items[0]), len(items[1]), len(items[4])
    torch.testing.assert_close(a[0, :n0], b[0, :n0], atol=1e-5, rtol=0)  # before the changed sample
    n2 = len(items[2])
    torch.testing.assert_close(a[0, n0 + n1:n0 + n1 + n2], b[0, n0 + n4:n0 + n4 + n2], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0, n0 + n1:n0 + n1 + n2], alone[0, :n2], atol=1e-5, rtol=0)  # = alone


def test_packed_loss_equals_per_sample_loss(setup):
    from qinyu.model.loss import hybrid_loss_sums

    tok, layout, model, items = setup
    pack = collate_packs([items[:4]], layout.im_end)
    with torch.no_grad():
        logits = model(**{k: v for k, v in pack.items() if k not in ("num_tokens", "labels", "audio_labels")}).logits
        packed = hybrid_loss_sums(logits, pack["labels"], pack["audio_labels"], layout.first_audio_token_id)
        single = []
        for it in items[:4]:
            b = collate_packs([[it]], layout.im_end)
            lg = model(**{k: v for k, v in b.items() if k not in ("num_tokens", "labels", "audio_labels")}).logits
            single.append(hybrid_loss_sums(lg, b["labels"], b["audio_labels"], layout.first_audio_token_id))
    assert packed.text_count == sum(s.text_count for s in single)
    assert abs(packed.text_sum.item() - sum(s.text_sum.item() for s in single)) < 1e-3
    assert packed.audio_count == sum(s.audio_count for s in single) > 0
    torch.testing.assert_close(packed.audio_sums, sum(s.audio_sums for s in single), atol=1e-3, rtol=1e-5)


def test_first_fit_efficiency_on_mixed_lengths():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(20, 400, 2000))
    packs = first_fit(lengths, 1024)
    assert sorted(i for p in packs for i in p) == list(range(2000))
    assert all(sum(lengths[i] for i in p) <= 1024 for p in packs)
    assert sum(lengths) / (len(packs) * 1024) >= 0.95


def test_packed_data_order_is_a_function_of_step(setup):
    _, _, _, items = setup
    a = PackedData([(items, 1.0)], max_length=256, seed=3)
    b = PackedData([(items, 1.0)], max_length=256, seed=3)
    for step in (0, 5, 17):
        assert [[it.source for it in p] for p in a.packs_for_step(step, 2)] == \
               [[it.source for it in p] for p in b.packs_for_step(step, 2)]
    with pytest.raises(ValueError, match="no training sample is selected"):
        PackedData([(items, 1.0)], max_length=10)
    with pytest.raises(ValueError, match="no training sample is selected"):
        PackedData([(items[:3], 0.1)], max_length=4096)  # a weight that rounds to no sample
    # consecutive steps differ, and crossing an epoch boundary continues with the next epoch's packs
    per_epoch = a.pack_count(0)
    assert [it.source for p in a.packs_for_step(0, 1) for it in p] != [it.source for p in a.packs_for_step(1, 1) for it in p]
    first_of_next_epoch = [it.source for it in a.packs_for_step(per_epoch, 1)[0]]
    assert first_of_next_epoch == [it.source for it in a.epoch(1)[0]]


def test_mixing_weights(setup):
    _, _, _, items = setup
    data = PackedData([(items[:3], 2.0), (items[3:], 0.5)], max_length=4096, seed=0)
    chosen = [it.source for p in data.epoch(0) for it in p]
    assert len(chosen) == 2 * 3 + round(0.5 * 6)
