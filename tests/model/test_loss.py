"""The hybrid loss recomputed by hand (float64, explicit loops) on a tiny model, with a
padded batch of two different-length conversations."""

import math

import torch

from qinyu.demo import synthetic_batch
from qinyu.model import hybrid_loss


def hand_loss(logits, labels, audio_labels, layout):
    """Reference arithmetic written out: text CE over vocab minus codebooks 1..7,
    codebook q CE at the position before each audio step, mean over the 7."""
    logits = logits.double()
    first, block = layout.first_audio_token_id, 7 * 1032
    keep = [i for i in range(logits.shape[-1]) if not first <= i < first + block]
    text_terms, audio_terms = [], {q: [] for q in range(1, 8)}
    for b in range(labels.shape[0]):
        for p in range(labels.shape[1] - 1):
            y = int(labels[b, p + 1])
            if y != -100:
                row = logits[b, p, keep]
                j = keep.index(y)
                text_terms.append(-(row[j] - torch.logsumexp(row, 0)).item())
            for q in range(1, 8):
                y = int(audio_labels[b, p + 1, q])
                if y != -100:
                    row = logits[b, p, first + (q - 1) * 1032: first + q * 1032]
                    audio_terms[q].append(-(row[y] - torch.logsumexp(row, 0)).item())
    text = sum(text_terms) / len(text_terms)
    per_cb = [sum(v) / len(v) for v in audio_terms.values()]
    return text, per_cb, text + sum(per_cb) / 7


def test_loss_matches_hand_computation(tiny, tokenizer, layout):
    batch = synthetic_batch(tokenizer, layout, num_samples=2, seed=3)
    assert (batch["attention_mask"] == 0).any(), "the batch must contain padding"
    with torch.no_grad():
        out = tiny(**batch)
    text, per_cb, total = hand_loss(out.logits, batch["labels"], batch["audio_labels"], layout)
    assert math.isclose(out.text_loss.item(), text, abs_tol=1e-5)
    for got, want in zip(out.audio_loss_per_codebook.tolist(), per_cb):
        assert math.isclose(got, want, abs_tol=1e-5)
    assert math.isclose(out.loss.item(), total, abs_tol=1e-5)
    # a random model is near chance: ln(1320) text+cb0 classes, ln(1032) per codebook
    assert abs(out.text_loss.item() - math.log(layout.vocab_size - 7 * 1032)) < 1.0


def test_text_only_has_zero_audio_loss(tiny, tokenizer, layout):
    from qinyu.layout import render
    from qinyu.model import collate

    r = render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenizer, layout)
    batch = collate([r], layout.im_end)
    out = tiny(**batch)
    assert out.audio_loss.item() == 0.0 and out.audio_loss_per_codebook.numel() == 0
    assert out.loss.item() == out.text_loss.item() > 0


def test_codebook_label_as_text_is_rejected(layout):
    logits = torch.zeros(1, 3, layout.vocab_size)
    labels = torch.tensor([[-100, layout.audio_token_id(2, 5), -100]])
    try:
        hybrid_loss(logits, labels, None, layout.first_audio_token_id)
    except ValueError as e:
        assert "codebook 1-7" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_loss_sums_split_across_micro_batches_equal_the_whole_batch(tiny, tokenizer, layout):
    """What distributed training relies on: sums over parts / global counts == the loss
    of one batch holding everything (here: two single-sample parts vs one batch)."""
    from qinyu.model.loss import hybrid_loss_sums

    batch = synthetic_batch(tokenizer, layout, num_samples=2, seed=4)
    with torch.no_grad():
        out = tiny(**batch)
        parts = []
        for i in range(2):
            n = int(batch["attention_mask"][i].sum())
            o = tiny(input_ids=batch["input_ids"][i:i + 1, :n], audio_steps=batch["audio_steps"][i:i + 1, :n],
                     audio_features=[batch["audio_features"][i]], speaker_embeddings=batch["speaker_embeddings"][i])
            parts.append(hybrid_loss_sums(o.logits, batch["labels"][i:i + 1, :n], batch["audio_labels"][i:i + 1, :n],
                                          layout.first_audio_token_id))
    n_text = sum(p.text_count for p in parts)
    n_audio = sum(p.audio_count for p in parts)
    total = sum(p.text_sum for p in parts) / n_text + (sum(p.audio_sums for p in parts) / n_audio).mean()
    assert math.isclose(total.item(), out.loss.item(), rel_tol=1e-5)


def test_loss_sums_at_the_labelled_rows_equal_the_sums_of_the_full_logits(tiny, tokenizer, layout):
    """Training's path (forward with return_loss_sums: logits only where the loss reads them)
    gives the sums and the gradients of the full-logits path, with and without audio heads."""
    from qinyu.model import QinYuForConditionalGeneration
    from qinyu.model.loss import hybrid_loss_sums

    batch = synthetic_batch(tokenizer, layout, num_samples=2, seed=5)
    heads = QinYuForConditionalGeneration(tiny.config.__class__.from_dict({**tiny.config.to_dict(),
                                                                            "use_audio_heads": True}))
    for model in (tiny, heads):
        model.zero_grad()
        full = model(**batch)
        want = hybrid_loss_sums(full.logits, batch["labels"], batch["audio_labels"], layout.first_audio_token_id)
        (want.text_sum + want.audio_sums.sum()).backward()
        want_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        out = model(**batch, return_loss_sums=True)
        got = out.loss_sums
        assert out.logits is None
        assert (got.text_count, got.audio_count) == (want.text_count, want.audio_count) and got.audio_count > 0
        assert torch.allclose(got.text_sum, want.text_sum, rtol=1e-5)
        assert torch.allclose(got.audio_sums, want.audio_sums, rtol=1e-5)
        (got.text_sum + got.audio_sums.sum()).backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert grads.keys() == want_grads.keys()
        for name, grad in grads.items():
            assert (grad - want_grads[name]).abs().max() <= 1e-5 * want_grads[name].abs().max(), name
    # a text-only pack: no audio step, audio sums zero and still in the graph
    from qinyu.layout import render
    from qinyu.model import collate

    r = render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenizer, layout)
    sums = heads(**collate([r], layout.im_end), return_loss_sums=True).loss_sums
    assert sums.audio_count == 0 and sums.audio_sums.tolist() == [0.0] * 7 and sums.text_count > 0


def test_return_loss_sums_needs_labels(tiny, tokenizer, layout):
    import pytest

    from qinyu.model.modeling import InputError

    batch = synthetic_batch(tokenizer, layout, num_samples=1, seed=6)
    with pytest.raises(InputError, match="return_loss_sums needs labels"):
        tiny(**{k: v for k, v in batch.items() if k not in ("labels", "audio_labels")}, return_loss_sums=True)
