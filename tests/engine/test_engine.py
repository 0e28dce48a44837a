"""The engine: batched greedy decoding equals decoding alone; an overfitted model
reproduces its training reply; sessions keep the reference's history policy."""

import numpy as np
import pytest
import torch

from qinyu.demo import overfit
from qinyu.engine import Engine, EngineError, Request, SamplingParams, generate
from qinyu.engine.session import Done, Persona, Session, TextDelta
from qinyu.layout import AssistantSpeech, UserSpeech, load_tokenizer, render, with_voice_prompt
from qinyu.model import QinYuForConditionalGeneration, collate, new_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = new_checkpoint(tmp_path_factory.mktemp("ck") / "tiny")
    return QinYuForConditionalGeneration.from_pretrained(path), load_tokenizer(path)


def prompt(tok, layout, text):
    return render([{"role": "user", "content": text}], tok, layout, add_generation_prompt=True).input_ids


def test_batched_equals_alone_token_for_token(tiny):
    model, tok = tiny
    texts = ["hello", "how are you doing today, my friend?", "x", "sing me a song"]
    reqs = [Request(prompt(tok, model.layout, t), params=SamplingParams(max_steps=40)) for t in texts]
    together = generate(model, reqs)
    for req, got in zip(reqs, together):
        alone = generate(model, [req])[0]
        assert got.text_ids == alone.text_ids
        assert np.array_equal(got.codes, alone.codes)
        assert got.steps == 40 and got.finished == "length"


def test_requests_join_and_leave_between_steps(tiny):
    model, tok = tiny
    a = Request(prompt(tok, model.layout, "first request"), params=SamplingParams(max_steps=12))
    b = Request(prompt(tok, model.layout, "a second, longer request joins later"), params=SamplingParams(max_steps=12))
    engine = Engine(model, max_batch=2)
    ra = engine.add(a)
    texts = {ra: []}
    for _ in range(5):
        for out in engine.step():
            texts[out.request_id].append(out)
    rb = engine.add(b)
    texts[rb] = []
    while engine.rows:
        for out in engine.step():
            texts[out.request_id].append(out)
    for rid, req in ((ra, a), (rb, b)):
        alone = generate(model, [req])[0]
        got = [o.text_id for o in texts[rid] if o.text_id is not None]
        assert got == alone.text_ids
        frames = [o.frames for o in texts[rid] if o.frames is not None and o.frames.shape[1]]
        codes = np.concatenate(frames, axis=1) if frames else np.zeros((8, 0), dtype=np.int64)
        assert np.array_equal(codes, alone.codes)
        steps = [o.audio_step for o in texts[rid] if o.audio_step is not None]
        assert len(steps) + len(got) == 12


def test_cancel_frees_the_slot(tiny):
    model, tok = tiny
    engine = Engine(model, max_batch=1)
    rid = engine.add(Request(prompt(tok, model.layout, "hi")))
    with pytest.raises(EngineError, match="full"):
        engine.add(Request(prompt(tok, model.layout, "hi")))
    engine.step()
    engine.cancel(rid)
    assert engine.rows == [] and engine.cache is None
    engine.add(Request(prompt(tok, model.layout, "again")))  # the slot is free again
    assert len(engine.rows) == 1


def test_bad_requests(tiny):
    model, tok = tiny
    engine = Engine(model)
    with pytest.raises(EngineError, match="empty prompt"):
        engine.add(Request([]))
    with pytest.raises(EngineError, match="exceeds the model's context of 4096"):
        engine.add(Request([65] * 4000, params=SamplingParams(max_steps=200)))
    session = Session(model, tok)
    with pytest.raises(EngineError, match="empty prompt"):
        session.user_turn(text="  ")
    session.max_audio_seconds = 1.0
    with pytest.raises(EngineError, match="longer than the maximum of 1 s"):
        session.user_turn(audio=(np.zeros(32000, np.float32), 16000))


def test_overfitted_model_reproduces_its_reply():
    """Train on one spoken conversation, then greedy decoding from its prompt gives back
    the reply's text and every code of its speech."""
    from qinyu.layout import TokenLayout, byte_tokenizer
    from qinyu.model import preset_config

    tok = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    torch.manual_seed(0)
    model = QinYuForConditionalGeneration(preset_config("tiny", layout))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, (8, 12))
    feats = torch.from_numpy(rng.standard_normal((4, 560)).astype(np.float32))
    voices = torch.from_numpy(rng.standard_normal((2, 192)).astype(np.float32))
    msgs = with_voice_prompt([{"role": "user", "content": "<|audio|>"},
                              {"role": "assistant", "content": "Nice to meet you.<|audio|>"}])
    seq = render(msgs, tok, layout, [UserSpeech(4), AssistantSpeech(codes)])
    batch = collate([seq], layout.im_end)
    batch.update(audio_features=[feats], speaker_embeddings=voices)
    acc, _ = overfit(model, batch, steps=400, target=1.0)
    assert min(acc.values()) == 1.0
    prompt_seq = render(msgs[:-1], tok, layout, [UserSpeech(4)], add_generation_prompt=True)
    req = Request(prompt_seq.input_ids, [feats.numpy()], voices.numpy(),
                  SamplingParams(max_steps=200, repetition_penalty=1.0))
    result = generate(model, [req])[0]
    assert result.finished == "stop"
    assert tok.decode(result.text_ids, skip_special_tokens=True) == "Nice to meet you."
    assert np.array_equal(result.codes, codes)
    assert result.invalid_codes == 0


def test_session_streams_and_drops_assistant_speech(tiny):
    model, tok = tiny
    session = Session(model, tok, persona=Persona(role_description="a calm narrator"),
                      params=SamplingParams(max_steps=24))
    turn = session.user_turn(audio=(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000))
    events = list(session.respond(turn))
    done = events[-1]
    assert isinstance(done, Done) and done.finished == "length"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == done.text
    # history: the user's speech turn and the assistant's text only
    assert [t.role for t in session.history] == ["user", "assistant"]
    assert session.history[1].features is None and "<|audio|>" not in session.history[1].text
    req = session.request(session.user_turn(text="and now?"))
    ids = req.input_ids
    assert ids.count(model.layout.user_speaker) == 1 and ids.count(model.layout.speaker) == 1
    assert not any(model.layout.is_audio(i) for i in ids)  # no assistant speech in the prompt
    assert len(req.audio_features) == 1 and req.speaker_embeddings.shape == (2, 192)


def test_enforced_schedule_keeps_the_rhythm(tiny):
    """A random model ignores the 1/8/4/8 rhythm; enforced by masking, it cannot."""
    model, tok = tiny
    req = Request(prompt(tok, model.layout, "hello"), params=SamplingParams(max_steps=40,
                                                                            enforce_schedule=[[1, 8], [4, 8]]))
    engine = Engine(model)
    engine.add(req)
    kinds = []
    while engine.rows:
        for out in engine.step():
            if out.text_id is not None and out.text_id == model.layout.end_of_conv:
                kinds.append("E")
            elif out.text_id is not None:
                kinds.append("T")
            elif out.audio_step is not None:
                kinds.append("A" if out.audio_step[0] < 1024 else "P")
    rhythm = "".join(kinds)
    # the seeded tiny checkpoint neither ends its text nor its audio within 40 steps
    assert rhythm == "T" + "A" * 8 + ("TTTT" + "A" * 8) * 2 + "TTTTAAA", rhythm


def test_frames_are_released_as_soon_as_complete_and_pads_never_pass():
    from qinyu.engine.stream import DecodeState
    from qinyu.layout import apply_delay

    codes = np.arange(8 * 5).reshape(8, 5) % 1024
    steps = apply_delay(codes)
    state = DecodeState(SamplingParams(), torch.Generator())
    got = []
    for i, step in enumerate(steps):
        state.add_audio_step(step.copy())
        frames = state.finished_frames()
        if i < 7:
            assert frames.shape[1] == 0  # frame 0 needs step 7 (its codebook 7)
        got.append(frames)
    assert np.array_equal(np.concatenate(got, axis=1), codes)
    # a pad where a code belongs is replaced by 0 and counted
    bad = DecodeState(SamplingParams(), torch.Generator())
    broken = steps.copy()
    broken[3, 2] = 1030
    for step in broken:
        bad.add_audio_step(step)
    out = bad.finished_frames()
    assert out[2, 1] == 0 and bad.invalid_codes == 1 and out.max() < 1024
    # a reply that stops before the delay is flushed releases its started frames on the final call
    early = DecodeState(SamplingParams(), torch.Generator())
    for step in steps[:9]:
        early.add_audio_step(step)
    assert early.finished_frames().shape[1] == 2
    tail = early.finished_frames(final=True)
    assert tail.shape[1] == 3 and early.invalid_codes > 1


def test_a_row_leaving_early_does_not_disturb_the_others(tiny):
    model, tok = tiny
    reqs = [Request(prompt(tok, model.layout, t), params=SamplingParams(max_steps=n))
            for t, n in (("short one", 5), ("a longer request that keeps going", 30), ("mid", 17))]
    together = generate(model, reqs)
    for req, got in zip(reqs, together):
        alone = generate(model, [req])[0]
        assert got.text_ids == alone.text_ids and np.array_equal(got.codes, alone.codes)


def test_session_details(tiny):
    model, tok = tiny
    session = Session(model, tok, params=SamplingParams(max_steps=12), max_history=0)
    for _ in range(2):
        done = list(session.respond(session.user_turn(text="hello")))[-1]
    assert done.steps == 12 and done.invalid_codes >= 0
    ids = session.request(session.user_turn(text="again")).input_ids
    assert ids.count(model.layout.im_start) == 3  # system, the new user turn, the generation prompt: no history
    with pytest.raises(EngineError, match="special token"):
        session.user_turn(text="what does <|user_speaker|> mean?")


def test_model_without_speaker_embeddings_hears_speech(tmp_path):
    from qinyu.layout import TokenLayout, byte_tokenizer
    from qinyu.model import preset_config

    tok = byte_tokenizer()
    cfg = preset_config("tiny", TokenLayout.from_tokenizer(tok))
    cfg.use_speaker_embedding = False
    model = QinYuForConditionalGeneration(cfg).eval()
    session = Session(model, tok, params=SamplingParams(max_steps=4))
    turn = session.user_turn(audio=(np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 16000))
    assert isinstance(list(session.respond(turn))[-1], Done)


def test_speaker_at_audio_steps_every_decode_step_gets_the_assistant_voice():
    """With ``speaker_at_audio_steps`` the engine gives each decode step its request's voice:
    the vector of the prompt's ``<|speaker|>``, not the user's ``<|user_speaker|>`` after it."""
    from qinyu.layout import TokenLayout, byte_tokenizer
    from qinyu.model import preset_config

    tok = byte_tokenizer()
    layout = TokenLayout.from_tokenizer(tok)
    cfg = preset_config("tiny", layout)
    cfg.speaker_at_audio_steps = True
    torch.manual_seed(0)
    model = QinYuForConditionalGeneration(cfg).eval()
    seq = render(with_voice_prompt([{"role": "user", "content": "<|audio|>"}]), tok, layout, [UserSpeech(4)],
                 add_generation_prompt=True)
    voices = np.random.default_rng(0).standard_normal((2, 192)).astype(np.float32)  # [assistant, user]
    calls = []
    forward = model.forward

    def spy(*args, **kw):
        calls.append(kw.get("step_voices"))
        return forward(*args, **kw)

    model.forward = spy
    params = SamplingParams(max_steps=6)
    reqs = [Request(seq.input_ids, [np.zeros((4, 560), np.float32)], voices, params),
            Request(prompt(tok, layout, "no voice here"), params=params)]
    generate(model, reqs)
    decode = [c for c in calls if c is not None]
    assert len(decode) >= 5
    for step in decode:
        assert len(step) in (1, 2)
        torch.testing.assert_close(step[0], torch.from_numpy(voices[0]))
        if len(step) == 2:
            assert step[1] is None  # the request without a voice
