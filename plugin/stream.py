"""Incremental JSON Lines reader for the agent's stream (exec, logs or a subprocess),
and ``finish``: what a finished stream means (complete, an agent error, a broken one).

Bytes arrive in arbitrary chunks; complete lines become schema records as soon as
they arrive.  Framing is checked: ``hello`` first, ``end`` last.  Anything else —
garbage, a record of an unknown type, a stream that stops before ``end`` — is an
``AgentError`` that says what was received.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Optional

from sockdebug_agent.schema import SCHEMA_VERSION, End, Error, Hello, SchemaError, UnknownRecordType, from_dict

from .errors import AgentError, SockdebugError

_EXCERPT = 120


def _excerpt(line: bytes) -> str:
    text = line[:_EXCERPT].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() else "\\x%02x" % ord(c) for c in text)
    return text + ("…" if len(line) > _EXCERPT else "")


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


class StreamReader:
    """Feed it bytes; it returns the records completed by each chunk."""

    def __init__(self, source: str):
        self.source = source  #: where the bytes come from, for error messages
        self.counts: Counter[str] = Counter()
        self.hello: Optional[Hello] = None
        self.end: Optional[End] = None
        self.error: Optional[Error] = None
        self._partial = b""
        self._lines = 0

    def feed(self, data: bytes) -> list[Any]:
        if not data:
            return []
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        records = (self._record(line) for line in chunks if line.strip())
        return [r for r in records if r is not None]

    def _record(self, line: bytes) -> Any:
        self._lines += 1
        if self.end is not None:
            raise AgentError(f"{self.source}: data after the end record (line {self._lines}: {_excerpt(line)})",
                             "the agent's output is mixed with something else; check the image's entrypoint")
        try:
            record = from_dict(json.loads(line))
        except UnknownRecordType:  # from a newer agent: new types keep the schema version
            self.counts["unknown"] += 1
            return None
        except (ValueError, SchemaError) as exc:
            raise AgentError(
                f"{self.source}: line {self._lines} is not an agent record ({exc}): {_excerpt(line)}",
                "is --image a sockdebug agent image of a compatible version?") from None
        kind = record.type
        if self.hello is None:
            if kind != "hello":
                raise AgentError(f"{self.source}: the stream did not start with a hello record "
                                 f"(got {kind})", "is --image a sockdebug agent image?")
            if record.schema_version != SCHEMA_VERSION:
                raise AgentError(
                    f"{self.source}: agent {record.agent_version} speaks schema {record.schema_version}, "
                    f"this plugin schema {SCHEMA_VERSION}",
                    "use an agent image of the same release as the plugin (--image)")
            self.hello = record
        elif kind == "end":
            self.end = record
        elif kind == "error":
            self.error = record
        self.counts[kind] += 1
        return record

    def close(self) -> None:
        """The stream has ended: complain if it ended early."""
        partial, self._partial, cut = self._partial, b"", ""
        if partial.strip():
            if self.end is None and not _is_json(partial):  # cut off mid-record: a truncation, not garbage
                cut = f", then a cut-off line: {_excerpt(partial)}"
            else:
                self._record(partial)
        if self.end is not None:
            return
        got = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items())) or "nothing"
        raise AgentError(f"{self.source}: the agent's stream broke off before its end record (received {got}{cut})",
                         "the agent container may have been killed (OOM, eviction) or the connection dropped; "
                         "run again, or look at `kubectl logs` of the sockdebug container")


class AgentFailed(SockdebugError):
    """The agent reported an error record; its exit code is passed through."""

    def __init__(self, message: str, hint: Optional[str], exit_code: int):
        super().__init__(f"the agent failed: {message}", hint)
        self.exit_code = exit_code


def finish(reader: StreamReader, returncode: Optional[int], stderr: bytes) -> None:
    """The stream has ended: raise what went wrong, if anything (the one place that decides
    what a failed agent stream means, for exec, logs and kubectl alike)."""
    try:
        reader.close()
    except AgentError as exc:
        detail = stderr.decode("utf-8", "replace").strip().splitlines()
        if detail:
            exc.cause += f"; the agent said: {detail[-1][:200]}"
        raise
    if reader.error is not None:
        raise AgentFailed(reader.error.message, reader.error.hint, reader.end.exit_code if reader.end else 6)
    if returncode not in (None, 0):
        raise AgentError(f"the agent exited with code {returncode}",
                         (stderr.decode("utf-8", "replace").strip()[:300] or "see the agent's stderr"))
