"""API calls under pressure: which failures are worth another attempt, how long to wait,
and the count of every request a run made (``Requests``).

As client-go's ``rest.Request`` (``request.go``, ``with_retry.go``) does:

- **429 Too Many Requests** (API Priority and Fairness, or ``--max-requests-inflight``)
  is retried for every verb: the server rejected the request before it ran.  The wait
  honours ``Retry-After`` (whole seconds, as client-go's ``retryAfterSeconds``).
- **Transient 5xx** — 502, 503, 504, and a 500 that carries a retry hint (a
  ``Retry-After`` header, ``details.retryAfterSeconds`` or reason ``ServerTimeout``) —
  and a **broken connection** (reset, closed before the answer, a read timeout) are
  retried for idempotent calls (GET, LIST, WATCH, DELETE, access reviews).  A write that
  may have landed (an ephemeral-container PATCH, a pod CREATE) is never sent again
  blindly: the caller says how to check whether it landed (``Kube._request(landed=...)``)
  and it is re-sent only when it did not.
- Waits grow exponentially (``Retry.base`` doubling up to ``Retry.cap``), never shorter
  than ``Retry-After``, times a random 1-1.5 so the requests a server refused together do
  not all come back together.  At most ``Retry.attempts`` retries and ``Retry.budget``
  seconds per call (client-go: 10 retries); then the call fails with an ``AccessError``
  that names the throttling or the failure.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Optional

from .errors import AccessError, SockdebugError

REASONS = ("429", "5xx", "reset")  #: why a request was sent again
TRANSIENT_5XX = frozenset({502, 503, 504})
_NAMED = re.compile(r"^/api/v1/(?:namespaces/[^/]+/)?(\w+)(?:/([^/]+)(?:/(\w+))?)?$")
_GROUPED = re.compile(r"^/apis/[^/]+/[^/]+/(?:namespaces/[^/]+/)?(\w+)(?:/([^/]+)(?:/(\w+))?)?$")


class Retry(NamedTuple):
    """How hard one call tries."""

    attempts: int = 10  #: retries after the first attempt (client-go's maxRetries)
    budget: float = 60.0  #: seconds of waiting, all retries of one call together
    base: float = 0.25  #: the first wait without Retry-After
    cap: float = 8.0  #: the longest wait without Retry-After

    def delay(self, retry: int, retry_after: Optional[float], rng: random.Random) -> float:
        """The wait before retry number ``retry`` (0-based)."""
        backoff = min(self.cap, self.base * 2 ** retry)
        return max(retry_after or 0.0, backoff) * rng.uniform(1.0, 1.5)


DEFAULT = Retry()


def retry_after(headers: Optional[Mapping[str, str]], body: bytes = b"") -> Optional[float]:
    """The seconds the server asked us to wait: the ``Retry-After`` header (an integer, as
    client-go reads it; an HTTP date is ignored), else the Status body's
    ``details.retryAfterSeconds``."""
    value = _header(headers, "Retry-After")
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    seconds = (status_body(body).get("details") or {}).get("retryAfterSeconds")
    return float(seconds) if isinstance(seconds, int) and seconds >= 0 else None


def why_retry(status: int, headers: Optional[Mapping[str, str]], body: bytes) -> Optional[str]:
    """``"429"`` or ``"5xx"`` when an HTTP failure may pass by itself; None otherwise."""
    if status == 429:
        return "429"
    if status in TRANSIENT_5XX:
        return "5xx"
    if status == 500 and (retry_after(headers, body) is not None
                          or status_body(body).get("reason") == "ServerTimeout"):
        return "5xx"
    return None


def status_body(body: bytes) -> dict[str, Any]:
    """An API Status body as a dict (empty when it is not one)."""
    try:
        status = json.loads(body)
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def _header(headers: Optional[Mapping[str, str]], name: str) -> Optional[str]:
    if not headers:
        return None
    value = headers.get(name)
    if value is None:  # a plain dict (the test double): compare without case
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


def kind(method: str, path: str, query: list) -> str:
    """The request as the API server's RequestInfo sees it: verb and resource[/subresource],
    without namespace and name (``get pods``, ``watch pods``, ``patch pods/ephemeralcontainers``)."""
    m = _NAMED.match(path) or _GROUPED.match(path)
    if not m:
        return f"{method.lower()} {path}"
    resource, name, sub = m.groups()
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    if verb is None:
        verb = "get" if name else ("watch" if ("watch", "true") in query else "list")
    return f"{verb} {resource}" + (f"/{sub}" if sub else "")


def summary_line(requests: Mapping[str, Any]) -> str:
    """``212 requests, 14 retried (429: 12, 5xx: 1, reset: 1)`` from ``Requests.as_dict()``."""
    why = ", ".join(f"{reason}: {n}" for reason, n in requests["retries"].items())
    return f"{requests['total']} requests, {requests['retried']} retried ({why})"


class Requests:
    """Every request one run sent to the API server (attempts, retries included), by kind,
    and the retries by reason.  Shared by the threads of a sweep."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.retries: Counter[str] = Counter({r: 0 for r in REASONS})
        self.landed = 0  #: writes found to have landed after a failure (not sent again)
        self._lock = threading.Lock()

    def sent(self, what: str) -> None:
        with self._lock:
            self.by_kind[what] += 1

    def retried(self, reason: str) -> None:
        with self._lock:
            self.retries[reason] += 1

    def found_landed(self) -> None:
        with self._lock:
            self.landed += 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @property
    def retried_total(self) -> int:
        return sum(self.retries.values())

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"total": self.total, "retried": self.retried_total, "retries": dict(self.retries),
                    "landed_after_failure": self.landed, "by_kind": dict(sorted(self.by_kind.items()))}

    def line(self) -> str:
        return summary_line(self.as_dict())

    def table(self) -> list[str]:
        """One line per kind, most frequent first (for ``-v``)."""
        with self._lock:
            return [f"{n:6d}  {k}" for k, n in sorted(self.by_kind.items(), key=lambda kv: (-kv[1], kv[0]))]


class Attempts:
    """The retries of one call: each wait is counted and told to ``Kube.trace``; past the
    policy's bound the call fails with an error that names the throttling or the failure."""

    def __init__(self, kube: Any, kind: str, what: tuple[str, str, Optional[str]],
                 http_error: Callable[[int, bytes, tuple[str, str, Optional[str]]], SockdebugError]):
        """``kube``: a ``kube.Kube`` (its policy, rng, requests, trace, sleep and host);
        ``http_error``: the error of a final HTTP failure (``kube.api_error``)."""
        self.kube, self.kind, self.what, self.http_error = kube, kind, what, http_error
        self.retries, self.waited = 0, 0.0

    def wait(self, failure: tuple[str, Any], retry_after: Optional[float]) -> None:
        kube = self.kube
        delay = kube.policy.delay(self.retries, retry_after, kube.rng)
        if self.retries >= kube.policy.attempts or self.waited + delay > kube.policy.budget:
            raise self.error(failure, gave_up=True) from None
        self.retries += 1
        self.waited += delay
        kube.requests.retried(failure[0])
        if kube.trace is not None:
            _, resource, namespace = self.what
            asked = f" (Retry-After {retry_after:g}s)" if retry_after is not None else ""
            kube.trace(f"api: retry {self.retries} of {self.kind} ({resource}{' in ' + namespace if namespace else ''})"
                       f" after {_failure_text(failure)}; waiting {delay:.1f}s{asked}")
        kube.sleep(delay)

    def error(self, failure: tuple[str, Any], gave_up: bool = False) -> SockdebugError:
        reason, detail = failure
        verb, resource, namespace = self.what
        where = f" in namespace {namespace}" if namespace else ""
        tried = (f" (gave up after {self.retries + 1} attempts and {self.waited:.0f}s of waiting)" if gave_up
                 else "")
        if reason == "reset":
            maybe = "" if gave_up or verb in ("get", "list", "watch") else "; it may or may not have taken effect"
            return AccessError(f"the connection to the API server at {self.kube.host} broke during {verb} "
                               f"{resource}{where} ({str(detail)[:200]}){maybe}{tried}",
                               "check the API server's health and the network to it, then run again")
        status, body = detail
        if status == 429:
            return AccessError(f"the API server kept throttling requests (429 Too Many Requests) to {verb} "
                               f"{resource}{where}{tried}",
                               "API Priority and Fairness limits how many requests your user may have in flight: "
                               "run again when the cluster is less busy; with sweep, lower --parallel; if it "
                               "persists, ask the cluster's admins which FlowSchema and priority level your user "
                               "falls into (`kubectl get flowschemas`)")
        error = self.http_error(status, body, self.what)
        error.cause += tried
        return error


def _failure_text(failure: tuple[str, Any]) -> str:
    reason, detail = failure
    if reason == "reset":
        return f"a broken connection ({str(detail)[:120]})"
    status, body = detail
    message = status_body(body).get("message") or body[:120].decode("utf-8", "replace")
    return f"{status}" + (" Too Many Requests" if status == 429 else f": {message[:120]}")
