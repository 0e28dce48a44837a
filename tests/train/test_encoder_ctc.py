"""CTC pre-training of a checkpoint's audio encoder (qinyu-nano's stand-in for
SenseVoice's ASR pre-training)."""

import numpy as np
import pytest
import torch

from qinyu.model import QinYuForConditionalGeneration, new_checkpoint
from qinyu.train.encoder_ctc import EncoderPretrainError, greedy_ctc, length_batches, pretrain_audio_encoder

ALPHABET = "abcde"


def toy_speech(n, seed):
    """Each letter is 3 frames of its own fixed 560-d pattern (plus noise); a text is 2-5 letters."""
    patterns = np.random.default_rng(123).standard_normal((len(ALPHABET), 560)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text = "".join(rng.choice(list(ALPHABET), size=int(rng.integers(2, 6))))
        frames = np.concatenate([np.repeat(patterns[ALPHABET.index(c)][None], 3, 0) for c in text])
        out.append((frames + 0.1 * rng.standard_normal(frames.shape).astype(np.float32), text.upper()))
    return out


def test_the_encoder_learns_to_transcribe_and_only_it_changes(tmp_path):
    ck = new_checkpoint(tmp_path / "init", preset="tiny", seed=0)
    before = QinYuForConditionalGeneration.from_pretrained(ck).state_dict()
    result = pretrain_audio_encoder(ck, toy_speech(200, 0), out=tmp_path / "out", steps=150, batch_size=16,
                                    lr=3e-3, heldout=toy_speech(30, 1), eval_every=75)
    assert result["heldout_cer"] < 0.25, result
    after = QinYuForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.audio_model.") for k in changed)
    rows = (tmp_path / "out" / "encoder_ctc_metrics.csv").read_text().splitlines()
    assert rows[0] == "step,ctc_loss,lr,seconds,heldout_cer" and len(rows) == 151


def test_an_encoder_whose_output_is_the_ctc_classes_emits_ctc_logits(tmp_path):
    """With the encoder's output width = text tokens + blank, no head is added: the frames the
    LM reads are the CTC logits, and greedy decoding of them transcribes."""
    from qinyu.eval.metrics.wer import align_counts
    from qinyu.layout import byte_tokenizer, load_tokenizer

    classes = byte_tokenizer().get_vocab_size(with_added_tokens=False) + 1
    ck = new_checkpoint(tmp_path / "init", preset="tiny", seed=0, audio_output_size=classes)
    pretrain_audio_encoder(ck, toy_speech(200, 0), out=tmp_path / "out", steps=150, batch_size=16, lr=3e-3)
    model = QinYuForConditionalGeneration.from_pretrained(tmp_path / "out", dtype=torch.float32)
    assert model.config.audio_encoder_output_size == classes
    tokenizer = load_tokenizer(tmp_path / "out")
    errors = total = 0
    for frames, text in toy_speech(30, 1):
        out = model.encode_audio([torch.from_numpy(frames)])[0]
        assert out.shape[-1] == classes
        hyp = tokenizer.decode(greedy_ctc(out.detach(), classes - 1))
        errors += sum(align_counts(list(text.lower()), list(hyp)))
        total += len(text)
    assert errors / total < 0.25, (errors, total)


def test_a_sensevoice_encoder_trains_its_own_ctc_head_in_bf16_and_keeps_it(tmp_path):
    """The nano encoder: SenseVoiceSmall's architecture, small, with a CTC head over the text
    tokens + blank. The head is trained with the encoder (here under bf16 autocast) and saved."""
    from qinyu.layout import byte_tokenizer
    from qinyu.model.presets import ctc_classes

    classes = ctc_classes(byte_tokenizer())
    encoder = {"type": "sensevoice", "input_size": 560, "output_size": 32, "attention_heads": 2, "linear_units": 64,
               "num_blocks": 2, "tp_blocks": 0, "vocab_size": classes, "keep_query_frames": False,
               "utterance_cmn": True}
    ck = new_checkpoint(tmp_path / "init", preset="tiny", seed=0, audio_encoder=encoder)
    head = "model.audio_model.model.ctc.ctc_lo.weight"
    before = QinYuForConditionalGeneration.from_pretrained(ck).state_dict()
    assert before[head].shape == (classes, 32)
    result = pretrain_audio_encoder(ck, toy_speech(200, 0), out=tmp_path / "out", steps=150, batch_size=16,
                                    lr=3e-3, heldout=toy_speech(30, 1), eval_every=75, dtype="bf16")
    assert result["heldout_cer"] < 0.25, result
    after = QinYuForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    assert not torch.equal(before[head], after[head])
    with pytest.raises(EncoderPretrainError, match="dtype must be fp32 or bf16, got 'fp16'"):
        pretrain_audio_encoder(ck, toy_speech(4, 0), steps=1, dtype="fp16")


def test_length_pools_batch_like_lengths_and_every_utterance_once_a_pass():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 200, size=1000))
    batches = length_batches(lengths, 32, np.random.default_rng(1), pool=10)
    one_pass = [next(batches) for _ in range(1000 // 32)]  # 31 full batches; the 8 left over wait
    seen = [i for b in one_pass for i in b]
    assert len(seen) == len(set(seen)) == 31 * 32
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in one_pass])
    random_batches = length_batches(lengths, 32, np.random.default_rng(1), pool=0)
    random_spread = np.mean([np.ptp([lengths[i] for i in next(random_batches)]) for _ in range(31)])
    assert spread < random_spread / 4, (spread, random_spread)  # little padding: like lengths share a batch
    # batch order is shuffled, not shortest first
    means = [np.mean([lengths[i] for i in b]) for b in one_pass]
    assert means != sorted(means)
    # fewer samples than a batch: three passes make nine, the eight shortest a batch
    assert sorted(next(length_batches([3, 4, 5], 8, np.random.default_rng(0), pool=2))) == [0, 0, 0, 1, 1, 1, 2, 2]


def test_bad_pairs_are_named(tmp_path):
    ck = new_checkpoint(tmp_path / "init", preset="tiny", seed=0)
    with pytest.raises(EncoderPretrainError, match="2 frames cannot carry 5 CTC labels"):
        pretrain_audio_encoder(ck, [(np.zeros((2, 560), np.float32), "hello")], steps=1)
    with pytest.raises(EncoderPretrainError, match="no .features, transcript. pairs"):
        pretrain_audio_encoder(ck, [], steps=1)


def test_greedy_ctc_collapses_repeats_and_drops_blanks():
    blank = 3
    frames = [0, 0, 3, 0, 1, 1, 3, 3, 2]
    log_probs = torch.nn.functional.one_hot(torch.tensor(frames), 4).float()
    assert greedy_ctc(log_probs, blank) == [0, 0, 1, 2]
