import numpy as np
import pytest


@pytest.fixture(scope="session")
def speaking_checkpoint(tmp_path_factory):
    """The tiny random model with a (quickly fitted) nano codec, so it can speak."""
    from qinyu.demo import speaking_checkpoint

    return speaking_checkpoint(tmp_path_factory.mktemp("speaking") / "tiny")


@pytest.fixture(scope="session")
def utterance():
    """An espeak-ng question at 16 kHz with silence before and after (enough for the VAD to stop)."""
    from qinyu.audio.espeak import espeak
    from qinyu.audio.io import resample

    wav, sr = espeak("what is two plus five", voice="en-us")
    speech = resample(wav, sr, 16000)
    return np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(16000, np.float32)]).astype(np.float32)


TALKER_REPLY = "Once upon a time a small cat lived by the sea."


@pytest.fixture(scope="session")
def talker_checkpoint(speaking_checkpoint, tmp_path_factory):
    """The speaking tiny model overfitted to answer the text turn "tell me" with
    ``TALKER_REPLY`` and 60 frames of speech, in the exact prompt the server renders;
    tests that need a reply with real text (barge-in truncation) use it."""
    import shutil

    import torch

    from qinyu.demo import overfit
    from qinyu.layout import AssistantSpeech, load_tokenizer, render, system_prompt
    from qinyu.model import QinYuForConditionalGeneration
    from qinyu.model.batch import collate

    ck = tmp_path_factory.mktemp("talker") / "tiny"
    shutil.copytree(speaking_checkpoint, ck)
    model = QinYuForConditionalGeneration.from_pretrained(ck)
    tok = load_tokenizer(ck)
    codes = np.random.default_rng(0).integers(0, 1024, (8, 60))
    messages = [{"role": "system", "content": system_prompt(None)}, {"role": "user", "content": "tell me"},
                {"role": "assistant", "content": TALKER_REPLY + "<|audio|>"}]
    seq = render(messages, tok, model.layout, [AssistantSpeech(codes)], schedule=model.config.interleave_schedule)
    batch = collate([seq], model.layout.im_end)
    batch["speaker_embeddings"] = [torch.zeros(1, 192)]
    torch.manual_seed(0)
    acc, _ = overfit(model, batch, steps=400, target=1.0)
    assert min(acc.values()) == 1.0, acc
    model.save_pretrained(ck)
    return ck
