import threading

import numpy as np
import pytest

from qinyu.engine import Request, SamplingParams, generate
from qinyu.engine.batcher import BatchRunner
from qinyu.engine.engine import EngineError


@pytest.fixture(scope="module")
def tiny_model():
    import torch

    from qinyu.layout import TokenLayout, byte_tokenizer
    from qinyu.model import QinYuForConditionalGeneration, preset_config

    tok = byte_tokenizer()
    torch.manual_seed(0)
    return QinYuForConditionalGeneration(preset_config("tiny", TokenLayout.from_tokenizer(tok))), tok


def run(runner, requests):
    """Submit all, collect every request's outputs through its callback."""
    outputs = {i: [] for i in range(len(requests))}
    done = threading.Event()
    remaining = [len(requests)]
    lock = threading.Lock()

    def callback(i):
        def take(item):
            outputs[i].append(item)
            if isinstance(item, Exception) or item.finished:
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()
        return take

    tickets = [runner.submit(r, callback(i)) for i, r in enumerate(requests)]
    return tickets, outputs, done


def test_shared_runner_gives_each_request_its_own_outputs(tiny_model):
    """More requests than rows: they queue, join as rows free up, and each gets exactly
    what it would get decoding alone."""
    model, tok = tiny_model
    prompts = [tok.encode(f"<|im_start|>user\nquestion {i}<|im_end|>\n<|im_start|>assistant\n").ids for i in range(5)]
    requests = [Request(p, params=SamplingParams(max_steps=10 + 3 * i)) for i, p in enumerate(prompts)]
    alone = [generate(model, [r])[0] for r in requests]
    runner = BatchRunner(model, max_batch=2)
    try:
        _, outputs, done = run(runner, requests)
        assert done.wait(60)
        for i, result in enumerate(alone):
            outs = outputs[i]
            assert all(o.request_id == outs[0].request_id for o in outs)
            assert [o.text_id for o in outs if o.text_id is not None] == result.text_ids
            frames = [o.frames for o in outs if o.frames is not None and o.frames.shape[1]]
            codes = np.concatenate(frames, axis=1) if frames else np.zeros((8, 0), np.int64)
            assert np.array_equal(codes, result.codes) and outs[-1].finished == result.finished
    finally:
        runner.close()


def test_cancel_queued_and_running_and_bad_prompts(tiny_model):
    model, tok = tiny_model
    prompt = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n").ids
    runner = BatchRunner(model, max_batch=1)
    try:
        long = Request(prompt, params=SamplingParams(max_steps=3000))
        bad = Request([], params=SamplingParams(max_steps=5))
        tickets, outputs, done = run(runner, [long, Request(prompt, params=SamplingParams(max_steps=5)), bad])
        runner.cancel(tickets[1])  # still queued behind the long one
        while not outputs[0]:
            pass
        runner.cancel(tickets[0])  # decoding
        assert done.wait(60)
        assert outputs[0][-1].finished == "cancelled" and outputs[1][-1].finished == "cancelled"
        assert isinstance(outputs[2][-1], EngineError) and "empty prompt" in str(outputs[2][-1])
        assert runner.load == (0, 0)
    finally:
        runner.close()
    with pytest.raises(EngineError, match="shut down"):
        runner.submit(Request(prompt), lambda item: None)


def test_a_failing_cancel_does_not_kill_the_engine_thread(tiny_model, monkeypatch):
    """Rebuilding the cache on cancel can fail (memory): the requests in flight get the error,
    the thread lives on and serves the next request."""
    model, tok = tiny_model
    prompt = tok.encode("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n").ids
    runner = BatchRunner(model, max_batch=2)
    try:
        def broken(rid):
            raise RuntimeError("out of memory (simulated)")

        monkeypatch.setattr(runner.engine, "cancel", broken)
        tickets, outputs, done = run(runner, [Request(prompt, params=SamplingParams(max_steps=3000)),
                                              Request(prompt, params=SamplingParams(max_steps=3000))])
        while not outputs[0]:
            pass
        runner.cancel(tickets[0])
        assert done.wait(60)
        assert outputs[0][-1].finished == "cancelled"
        assert isinstance(outputs[1][-1], RuntimeError)  # the other request shared the broken cache
        monkeypatch.undo()
        _, outputs, done = run(runner, [Request(prompt, params=SamplingParams(max_steps=5))])
        assert done.wait(60) and outputs[0][-1].finished == "length" and runner.alive
    finally:
        runner.close()


def test_requests_own_their_parameters(tiny_model):
    """Changing a session's parameters later must not change a request already made."""
    from qinyu.engine.session import Session

    model, tok = tiny_model
    session = Session(model, tok, params=SamplingParams(max_steps=7))
    request = session.request(session.user_turn(text="hi"))
    session.params.max_steps = 999
    assert request.params.max_steps == 7
