"""One engine shared by many producers: a background thread owns the ``Engine`` and
runs its decode loop; callers submit requests from any thread and get every
``StepOutput`` of their own request through a callback.

Serving needs exactly this shape (the reference web demo instead shares one model
between users without a lock): all sessions' decode steps go through one batched
forward, and each session sees only its own outputs. Requests beyond ``max_batch``
wait in a queue and join as rows free up. A cancelled request gets a final
``StepOutput`` with ``finished="cancelled"``, so a consumer always sees an end.
"""

from __future__ import annotations

import collections
import threading
import traceback
from dataclasses import dataclass
from typing import Callable

from .engine import Engine, EngineError, Request, StepOutput

Callback = Callable[[StepOutput | Exception], None]


@dataclass
class Ticket:
    """A submitted request, before and after it joins the engine."""

    request: Request
    callback: Callback
    rid: int | None = None  # the engine's id once prefilled
    state: object = None  # its DecodeState once prefilled (steps taken, invalid codes)
    cancelled: bool = False
    finished: bool = False


class BatchRunner:
    def __init__(self, model, max_batch: int = 16):
        self.engine = Engine(model, max_batch=max_batch)
        self.waiting: collections.deque[Ticket] = collections.deque()
        self.active: dict[int, Ticket] = {}
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.closed = False
        self.steps = 0
        self.thread = threading.Thread(target=self._loop, name="qinyu-engine", daemon=True)
        self.thread.start()

    # -- called from any thread ----------------------------------------------------------
    def submit(self, request: Request, callback: Callback) -> Ticket:
        ticket = Ticket(request, callback)
        with self.wake:
            if self.closed:
                raise EngineError("the engine is shut down")
            self.waiting.append(ticket)
            self.wake.notify()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Stop a request (queued or decoding); its callback gets a last output with
        ``finished="cancelled"`` unless it had already finished."""
        with self.wake:
            ticket.cancelled = True
            self.wake.notify()

    def close(self) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout=10)

    @property
    def load(self) -> tuple[int, int]:
        """(decoding, waiting) request counts."""
        with self.lock:
            return len(self.active), len(self.waiting)

    # -- the engine thread ---------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._run()
        except BaseException as e:  # the thread must never die silently: fail everything and refuse new work
            traceback.print_exc()
            with self.wake:
                self.closed = True
                stranded = list(self.waiting) + list(self.active.values())
                self.waiting.clear()
                self.active.clear()
            for t in stranded:
                self._finish(t, EngineError(f"the engine stopped: {type(e).__name__}: {e}"))

    def _reset(self, error: Exception) -> None:
        """A failed forward or cache edit: end every decoding request with the error; the engine starts clean."""
        traceback.print_exc()
        for t in list(self.active.values()):
            self._finish(t, error)
        self.active.clear()
        self.engine.rows, self.engine.cache, self.engine.attention = [], None, None

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.closed and not self.waiting and not self.active:
                    self.wake.wait()
                if self.closed:
                    pending = list(self.waiting) + list(self.active.values())
                    self.waiting.clear()
                    self.active.clear()
                    break
                cancelled = [t for t in self.active.values() if t.cancelled]
                queued_cancelled = [t for t in self.waiting if t.cancelled]
                for t in queued_cancelled:
                    self.waiting.remove(t)
                joining = []
                while self.waiting and len(self.active) + len(joining) < self.engine.max_batch:
                    joining.append(self.waiting.popleft())
            for t in queued_cancelled:
                self._finish(t, StepOutput(-1, finished="cancelled"))
            try:
                for t in cancelled:
                    self.active.pop(t.rid, None)
                    self._finish(t, StepOutput(t.rid, finished="cancelled"))
                    self.engine.cancel(t.rid)  # rebuilds the cache without the row: can fail (memory)
            except Exception as e:
                self._reset(e)
            for t in joining:
                try:
                    t.rid = self.engine.add(t.request)
                    t.state = self.engine.state(t.rid)
                    self.active[t.rid] = t
                except Exception as e:  # a bad prompt fails its own request only
                    self._finish(t, e)
            if not self.active:
                continue
            try:
                outputs = self.engine.step()
            except Exception as e:  # a failed forward ends every request in it; the engine starts clean
                self._reset(e)
                continue
            self.steps += 1
            for out in outputs:
                t = self.active.get(out.request_id)
                if t is None or t.cancelled:
                    continue
                if out.finished:
                    del self.active[out.request_id]
                    self._finish(t, out)
                else:
                    self._deliver(t, out)
        for t in pending:
            self._finish(t, EngineError("the engine is shut down"))

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.closed

    def _deliver(self, ticket: Ticket, item) -> None:
        try:
            ticket.callback(item)
        except Exception:  # a consumer's failure must not stop the other sessions
            traceback.print_exc()

    def _finish(self, ticket: Ticket, item) -> None:
        if not ticket.finished:
            ticket.finished = True
            self._deliver(ticket, item)
