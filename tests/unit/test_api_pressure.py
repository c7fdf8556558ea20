"""API pressure on the API double: 429 with and without Retry-After, transient 5xx, broken
connections before and after a write landed, the give-up bound, exec retries, watch
reconnects, and the request counts a sweep reports (``retry.py``, ``kube.Kube._request``).

The double never sleeps: each ``Kube`` it makes records its waits in ``api.slept``."""

from __future__ import annotations

import random
import threading
import time

import pytest
from kube_double import ApiDouble, Exec, entry
from sockdebug_plugin import inject, kube, profiles, retry
from sockdebug_plugin.errors import AccessError
from sockdebug_plugin.lifecycle import SharedWatch, wait_started
from sockdebug_plugin.retry import Retry

POD = r"/pods/api$"
PATCH = r"/pods/api/ephemeralcontainers$"


@pytest.fixture
def api() -> ApiDouble:
    api = ApiDouble()
    api.add_pod()
    return api


def spec(api: ApiDouble) -> dict:
    pod = api.pods[("shop", "api")]
    return inject.container_spec("img", "IfNotPresent", "app", profiles.for_container("general", pod, "app"),
                                 inject.serve_command(), serve=True)


def counted(k: kube.Kube) -> dict:
    return k.requests.as_dict()


# --- 429 ------------------------------------------------------------------------------------------

def test_429_with_retry_after_waits_at_least_as_long_as_asked(api):
    api.fail("GET", POD, "status_429", headers={"Retry-After": "2"}, times=2)
    k = api.kube()
    traced: list[str] = []
    k.trace = traced.append
    assert k.get_pod("shop", "api")["metadata"]["name"] == "api"
    assert len(api.slept) == 2 and all(2 <= s <= 3 for s in api.slept)
    got = counted(k)
    assert got["by_kind"] == {"get pods": 3} and got["retries"] == {"429": 2, "5xx": 0, "reset": 0}
    assert k.requests.line() == "3 requests, 2 retried (429: 2, 5xx: 0, reset: 0)"
    assert traced[0].startswith("api: retry 1 of get pods (pod api in shop) after 429 Too Many Requests; waiting")
    assert traced[0].endswith("(Retry-After 2s)")


def test_429_without_retry_after_backs_off_exponentially_with_jitter(api):
    api.fail("GET", POD, "status_429", times=5)
    k = api.kube(policy=Retry(base=0.25, cap=2.0))
    k.get_pod("shop", "api")
    for wait, backoff in zip(api.slept, [0.25, 0.5, 1.0, 2.0, 2.0]):
        assert backoff <= wait <= 1.5 * backoff
    assert len(api.slept) == 5


def test_a_429_on_a_write_is_sent_again_without_a_check(api):
    """APF refuses before the request runs: the patch cannot have landed."""
    api.fail("PATCH", PATCH, "status_429", headers={"Retry-After": "1"})
    k = api.kube()
    k.add_ephemeral_container("shop", "api", spec(api))
    assert len(api.agents()) == 1
    assert counted(k)["by_kind"] == {"patch pods/ephemeralcontainers": 2}


def test_giving_up_names_the_throttling_and_the_way_out(api):
    api.fail("GET", POD, "status_429", headers={"Retry-After": "1"}, times=50)
    k = api.kube(policy=Retry(attempts=4))
    with pytest.raises(AccessError) as err:
        k.get_pod("shop", "api")
    assert "kept throttling requests (429 Too Many Requests) to get pod api in namespace shop" in err.value.cause
    assert "gave up after 5 attempts" in err.value.cause
    assert "API Priority and Fairness" in err.value.hint and "--parallel" in err.value.hint
    assert counted(k)["by_kind"] == {"get pods": 5} and counted(k)["retried"] == 4


def test_the_wait_budget_bounds_a_call_too(api):
    api.fail("GET", POD, "status_429", headers={"Retry-After": "30"}, times=50)
    k = api.kube(policy=Retry(budget=60))
    with pytest.raises(AccessError, match="gave up after 2 attempts"):
        k.get_pod("shop", "api")
    assert len(api.slept) == 1 and 30 <= api.slept[0] <= 45


# --- 5xx -------------------------------------------------------------------------------------------

def test_503_on_a_read_is_retried(api):
    api.fail("GET", POD, "status_503", times=2)
    k = api.kube()
    k.get_pod("shop", "api")
    assert counted(k)["retries"]["5xx"] == 2


def test_a_plain_500_is_not_retried_but_one_with_a_retry_hint_is(api):
    api.fail("GET", POD, "status_500")
    k = api.kube()
    with pytest.raises(AccessError, match=r"failed \(500\)"):
        k.get_pod("shop", "api")
    api.fail("GET", POD, "status_500", headers={"Retry-After": "1"})
    k.get_pod("shop", "api")
    assert counted(k)["retries"]["5xx"] == 1


def test_503_after_the_patch_landed_is_checked_and_not_sent_again(api):
    api.fail("PATCH", PATCH, "status_503", landed=True)
    k = api.kube()
    pod = k.add_ephemeral_container("shop", "api", spec(api))
    assert len(api.agents()) == 1 and pod["spec"]["ephemeralContainers"][0]["name"] == api.agents()[0]["name"]
    assert counted(k)["by_kind"] == {"patch pods/ephemeralcontainers": 1, "get pods": 1}
    assert counted(k)["landed_after_failure"] == 1 and api.slept == []


@pytest.mark.parametrize("reason", ["5xx", "reset"])
def test_a_503_or_a_reset_before_the_patch_landed_is_checked_then_sent_again(api, reason):
    if reason == "5xx":
        api.fail("PATCH", PATCH, "status_503")
    else:  # a broken connection
        api.reset("PATCH", PATCH)
    k = api.kube()
    k.add_ephemeral_container("shop", "api", spec(api))
    assert len(api.agents()) == 1
    assert counted(k)["by_kind"] == {"patch pods/ephemeralcontainers": 2, "get pods": 1}
    assert counted(k)["retries"][reason] == 1


# --- broken connections -------------------------------------------------------------------------------


def test_a_reset_after_the_patch_landed_never_adds_a_second_agent(api):
    api.reset("PATCH", PATCH, landed=True, times=3)  # and the check itself is not disturbed
    k = api.kube()
    k.add_ephemeral_container("shop", "api", spec(api))
    assert len(api.agents()) == 1
    assert counted(k)["by_kind"] == {"patch pods/ephemeralcontainers": 1, "get pods": 1}
    assert counted(k)["landed_after_failure"] == 1


def test_a_reset_after_a_pod_was_created_does_not_create_it_again(api):
    body = profiles.node_pod("sockdebug-sweep-abc", "node-1", "img", "Never", ["sockdebug-agent", "pods"],
                             profiles.for_node("auto"), "sweep")
    api.reset("POST", r"/pods$", landed=True)
    k = api.kube()
    assert k.create_pod("shop", body)["metadata"]["name"] == "sockdebug-sweep-abc"
    assert len(api.created) == 1 and counted(k)["landed_after_failure"] == 1


def test_resets_on_reads_are_retried_until_the_bound(api):
    api.reset("GET", POD, times=2)
    k = api.kube()
    k.get_pod("shop", "api")
    assert counted(k)["retries"]["reset"] == 2
    api.reset("GET", POD, times=50)
    with pytest.raises(AccessError, match="broke during get pod api") as err:
        api.kube(policy=Retry(attempts=2)).get_pod("shop", "api")
    assert "gave up after 3 attempts" in err.value.cause


def test_a_refused_connection_is_not_retried():
    class Down(ApiDouble):
        def request(self, *a, **kw):
            self.calls.append(("GET", ""))
            raise kube.Unreachable("connection refused")

    down = Down()
    with pytest.raises(AccessError, match="unreachable"):
        down.kube().get_pod("shop", "api")
    assert len(down.calls) == 1 and down.slept == []


# --- exec -----------------------------------------------------------------------------------------------

class Flaky(ApiDouble):
    """Refuses or breaks the first execs as told, then answers."""

    def __init__(self, troubles: list):
        super().__init__()
        self.troubles = troubles

    def exec(self, path, query):
        self.calls.append(("EXEC", path))
        if self.troubles:
            trouble = self.troubles.pop(0)
            if isinstance(trouble, kube.Unreachable):
                raise trouble
            raise kube.Refused(*entry(trouble[0]), trouble[1])
        return Exec(b"")


def test_exec_is_retried_after_429_and_a_broken_handshake():
    api = Flaky([("status_429", {"Retry-After": "1"}), kube.Unreachable("Connection reset by peer", True),
                 ("status_503", None)])
    k = api.kube()
    k.exec("shop", "api", "sockdebug-x", ["sockdebug-agent"])
    assert counted(k)["by_kind"] == {"create pods/exec": 4}
    assert counted(k)["retries"] == {"429": 1, "5xx": 1, "reset": 1}


def test_exec_that_cannot_connect_is_not_retried():
    api = Flaky([kube.Unreachable("Connection refused")])
    with pytest.raises(AccessError, match="exec into api failed"):
        api.kube().exec("shop", "api", "sockdebug-x", ["sockdebug-agent"])
    assert api.slept == []


# --- one watch for many pods ------------------------------------------------------------------------------

def test_one_namespace_watch_feeds_every_waiter(api):
    for i in range(5):
        api.add_pod(name=f"p{i}")
    k = api.kube()
    watch = SharedWatch(k)
    try:
        specs = {f"p{i}": spec(api) for i in range(5)}
        for name, s in specs.items():
            k.add_ephemeral_container("shop", name, s)
        for name, s in specs.items():
            pod = wait_started(watch("shop", name, time.monotonic() + 5), s["name"], 5, one_shot=False)
            assert pod["metadata"]["name"] == name
    finally:
        watch.close()
    assert counted(k)["by_kind"] == {"patch pods/ephemeralcontainers": 5, "watch pods": 1}
    assert not [t for t in threading.enumerate() if t.name == "watch-shop"], "close() must end the watch's thread"


def test_a_streamed_answer_can_be_ended_from_another_thread():
    """The real transport's stream: shutdown() interrupts a blocked read (urllib3 >= 2.3),
    else closes; a broken connection mid-stream is a transient Unreachable."""
    from sockdebug_plugin.kubeclient import Streamed
    from urllib3.exceptions import ProtocolError

    class Resp:
        status, headers, ended = 200, {}, ""

        def __iter__(self):
            yield b'{"type": "ADDED"}\n'
            raise ProtocolError("Connection broken: IncompleteRead(0 bytes read)")

        def shutdown(self):
            self.ended = "shutdown"

        def close(self):
            self.ended = "close"

    resp = Resp()
    stream = Streamed(resp)
    lines = iter(stream)
    assert next(lines) == b'{"type": "ADDED"}\n'
    with pytest.raises(kube.Unreachable) as err:
        next(lines)
    assert err.value.transient
    stream.shutdown()
    assert resp.ended == "shutdown"


def test_a_broken_watch_resumes_from_its_last_version(api):
    class Breaking(ApiDouble):
        broke = False

        def _namespace_watch(self, ns, version, response):
            yield from super()._namespace_watch(ns, version, response) if self.broke else self._break(ns)

        def _break(self, ns):
            self.broke = True
            yield from super()._namespace_watch(ns, None, type("R", (), {"shut": True})())
            raise kube.Unreachable("IncompleteRead(0 bytes read)", True)

    api = Breaking()
    api.add_pod()
    k = api.kube()
    watch = SharedWatch(k)
    try:
        s = spec(api)
        states = watch("shop", "api", time.monotonic() + 5)
        assert next(states)["metadata"]["name"] == "api"  # the first watch's ADDED, before it broke
        k.add_ephemeral_container("shop", "api", s)
        wait_started(states, s["name"], 5, one_shot=False)
    finally:
        watch.close()
    assert counted(k)["by_kind"]["watch pods"] == 2 and counted(k)["retries"]["reset"] == 1


def test_jitter_never_waits_less_than_retry_after():
    rng = random.Random(7)
    policy = Retry()
    assert all(policy.delay(n, 3.0, rng) >= 3.0 for n in range(10))
    assert all(policy.delay(n, None, rng) <= policy.cap * 1.5 for n in range(20))


def test_request_kinds_are_verb_and_resource():
    assert retry.kind("GET", "/api/v1/namespaces/a/pods", [("watch", "true")]) == "watch pods"
    assert retry.kind("GET", "/api/v1/pods", []) == "list pods"
    assert retry.kind("GET", "/api/v1/namespaces/a", []) == "get namespaces"
    assert retry.kind("PATCH", "/api/v1/namespaces/a/pods/b/ephemeralcontainers", []) == (
        "patch pods/ephemeralcontainers")
    assert retry.kind("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", []) == (
        "create selfsubjectaccessreviews")
    assert retry.kind("GET", "/apis/apps/v1/namespaces/a/deployments/d", []) == "get deployments"
