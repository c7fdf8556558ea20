"""Several agent streams at once, read as they arrive, and a Ctrl-C that ends them cleanly.

``Follow(runner, jobs).records()`` runs each job (a target and a query) in a thread of
its own and yields ``(job index, record)`` in the caller's thread in arrival order, so the
caller prints whole rows and nothing else writes to stdout.

Ctrl-C while following (``CtrlC``): the first one only sets a flag and, from a thread of
its own, asks every stream to end the agent's own way (``Runner.stop``: a byte on an
exec's stdin, a graceful delete of a node pod); a handler that raised could cut a row, or
a websocket frame, in half.  The records are read on until each agent has written its
last events, its final tick and ``end``, for at most ``runner.FOLLOW_GRACE`` seconds:
streams still open then are given up (``cut``).  A second Ctrl-C raises
``KeyboardInterrupt`` at once (exit 130).
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Optional

from .runner import FOLLOW_GRACE, Runner

_DONE, _FAILED, _RECORD = 0, 1, 2
_POLL = 0.2  # s between looks at the grace period while no record arrives


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class CtrlC:
    """While entered (in the main thread, unless SIGINT is ignored: nohup, a background
    job): the first Ctrl-C calls ``on_first`` in a thread and says ``note``; a second
    raises ``KeyboardInterrupt``."""

    def __init__(self, on_first: Callable[[], None], note: str, say: Callable[[str], None] = _stderr):
        self.on_first, self.note, self.say = on_first, note, say
        self.pressed = 0
        self._previous: Any = None
        self._installed = False

    def _handle(self, _signum: int, _frame: Any) -> None:
        self.pressed += 1
        if self.pressed > 1:
            raise KeyboardInterrupt
        self.say(self.note)
        threading.Thread(target=self.on_first, daemon=True, name="ctrl-c").start()

    def __enter__(self) -> CtrlC:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


def stop_note() -> str:
    return f"stopping: waiting up to {FOLLOW_GRACE:g}s for the agents' last records (Ctrl-C again to quit at once)"


class Job(NamedTuple):
    target: Any  #: targets.Target or NodeTarget
    query: Any  #: sockdebug_agent.query.Query


class Follow:
    def __init__(self, runner: Runner, jobs: list[Job], say: Callable[[str], None] = _stderr):
        self.runner, self.jobs, self.say = runner, jobs, say
        self.stopped = False  #: the streams were asked to end (Ctrl-C, or ``stop()``)
        self.failures: dict[int, BaseException] = {}  #: job index -> why its stream failed
        self.ended: set[int] = set()  #: jobs whose stream ended by itself (framed, or failed)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._grace_until: Optional[float] = None
        self._lock = threading.Lock()
        self.ctrl_c = CtrlC(self.stop, stop_note(), say)

    @property
    def interrupted(self) -> bool:
        """The user pressed Ctrl-C."""
        return self.ctrl_c.pressed > 0

    def _pump(self, i: int, job: Job) -> None:
        from .commands import records_of

        try:
            for rec in records_of(self.runner, job.target, [job.query]):
                self._queue.put((i, _RECORD, rec))
        except BaseException as exc:  # handed to the reader's thread
            self._queue.put((i, _FAILED, exc))
        else:
            self._queue.put((i, _DONE, None))

    def stop(self) -> None:
        """Ask every stream to end cleanly; ``records`` reads on for the grace period."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
            self._grace_until = time.monotonic() + FOLLOW_GRACE
        self.runner.stop()

    def cut(self) -> list[int]:
        """The jobs whose stream was given up (still open when the grace ran out)."""
        return [i for i in range(len(self.jobs)) if i not in self.ended]

    def records(self) -> Iterator[tuple[int, Any]]:
        threads = [threading.Thread(target=self._pump, args=(i, job), daemon=True, name=f"follow-{i}")
                   for i, job in enumerate(self.jobs)]
        with self.ctrl_c:
            for t in threads:
                t.start()
            while len(self.ended) < len(self.jobs):
                if self._grace_until is not None and time.monotonic() > self._grace_until:
                    break
                try:
                    i, kind, payload = self._queue.get(timeout=_POLL)
                except queue.Empty:
                    continue
                if kind == _RECORD:
                    yield i, payload
                    continue
                self.ended.add(i)
                if kind == _FAILED:
                    if isinstance(payload, KeyboardInterrupt):
                        raise payload
                    self.failures[i] = payload
