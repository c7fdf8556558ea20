"""Several agent streams at once, read as they arrive, and a Ctrl-C that ends them cleanly.

``Follow(runner, jobs).records()`` runs each job (a target and a query) in a thread of
its own and yields ``(job index, record)`` in the caller's thread in arrival order, so the
caller prints whole rows and nothing else writes to stdout.

Ctrl-C while following: the first one only sets a flag (a handler that raised could cut a
row, or a websocket frame, in half); the loop then asks every stream to end the agent's
own way (``Runner.stop``: a byte on an exec's stdin, a graceful delete of a node pod),
and reads on until each agent has written its last events, its final tick and ``end``,
for at most ``runner.FOLLOW_GRACE`` seconds: streams still open then are given up
(``cut``).  A second Ctrl-C raises ``KeyboardInterrupt`` at once (exit 130).
"""

from __future__ import annotations

import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

from .runner import FOLLOW_GRACE, Runner
from .targets import NodeTarget

_DONE, _FAILED, _RECORD = 0, 1, 2
_POLL = 0.2  # s between looks at the Ctrl-C flag while no record arrives


class Job(NamedTuple):
    target: Any  #: targets.Target or NodeTarget
    query: Any  #: sockdebug_agent.query.Query


class Follow:
    def __init__(self, runner: Runner, jobs: list[Job], say: Any = None):
        self.runner, self.jobs = runner, jobs
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.interrupted = False  #: the user pressed Ctrl-C
        self.stopped = False  #: the streams were asked to end (Ctrl-C, or ``stop()``)
        self.failures: dict[int, BaseException] = {}  #: job index -> why its stream failed
        self.ended: set[int] = set()  #: jobs whose stream ended by itself (framed, or failed)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._signals = 0
        self._grace_until: Optional[float] = None

    def _pump(self, i: int, job: Job) -> None:
        try:
            t = job.target
            stream = self.runner.run(t, job.query) if isinstance(t, NodeTarget) else self.runner.run_pod(t, job.query)
            for rec in stream:
                self._queue.put((i, _RECORD, rec))
        except BaseException as exc:  # handed to the reader's thread
            self._queue.put((i, _FAILED, exc))
        else:
            self._queue.put((i, _DONE, None))

    def _on_sigint(self, _signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals > 1:
            raise KeyboardInterrupt

    def stop(self) -> None:
        """Ask every stream to end cleanly; ``records`` reads on for the grace period."""
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
        # Not in a worker thread, and not where SIGINT is ignored (nohup, a background job).
        main = (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
        previous = signal.signal(signal.SIGINT, self._on_sigint) if main else None
        try:
            for t in threads:
                t.start()
            while len(self.ended) < len(self.jobs):
                if self._signals and not self.interrupted:
                    self.interrupted = True
                    self.say(f"stopping: waiting up to {FOLLOW_GRACE:g}s for the agents' last records "
                             "(Ctrl-C again to quit at once)")
                    self.stop()
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
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
