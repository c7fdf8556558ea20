"""What a sweep asks of the API server, counted on the API double (issue 14, goal 4): list
calls per namespace and a watch per namespace, one PATCH and one exec per pod that gains
an agent, one exec per pod whose agent runs already, and never a GET per pod."""

from __future__ import annotations

import io
import json

import pytest
from kube_double import ApiDouble
from sockdebug_plugin import kube, sweep_run
from sockdebug_plugin.options import AgentOptions, Conn, Printing, SweepOptions


def seeded(pods: int, namespaces: tuple[str, ...] = ("shop",)) -> ApiDouble:
    api = ApiDouble()
    for ns in namespaces:
        for i in range(pods):
            api.add_pod(ns, f"p{i}")
    return api


def sweep(api: ApiDouble, monkeypatch, *, all_namespaces: bool = False, output: str = "json") -> tuple[str, str]:
    made = []
    monkeypatch.setattr(kube, "connect", lambda *a, **kw: made.append(api.kube()) or made[-1])
    out, err = io.StringIO(), io.StringIO()
    opts = SweepOptions(Conn("shop"), AgentOptions("img", timeout=10), all_namespaces=all_namespaces,
                        output=output, printing=Printing(output), verbose=True)
    assert sweep_run.run(opts, out, err) == 0
    return out.getvalue(), err.getvalue()


@pytest.mark.parametrize("pods", [3, 12])
def test_a_cold_then_warm_sweep_of_one_namespace(monkeypatch, pods):
    api = seeded(pods)
    doc = json.loads(sweep(api, monkeypatch)[0])
    assert doc["summary"]["inspected"] == pods
    assert doc["scope"]["requests"]["by_kind"] == {
        "list pods": 2, "list services": 1,  # the pods in scope, every pod (node checks), the Services
        "list endpointslices": 1, "list networkpolicies": 1, "list events": 1, "list nodes": 1,  # collect.read
        "create selfsubjectaccessreviews": 2, "get namespaces": 1, "watch pods": 1,  # once per namespace
        "patch pods/ephemeralcontainers": pods, "create pods/exec": pods}  # once per pod: no multi-pod patch
    assert doc["scope"]["requests"]["total"] == 2 * pods + 11 and doc["scope"]["requests"]["retried"] == 0
    assert all(len(api.agents("shop", f"p{i}")) == 1 for i in range(pods))
    warm = json.loads(sweep(api, monkeypatch)[0])
    assert warm["scope"]["requests"]["by_kind"] == {
        "list pods": 2, "list services": 1, "list endpointslices": 1, "list networkpolicies": 1, "list events": 1,
        "list nodes": 1, "create pods/exec": pods}
    assert all(len(api.agents("shop", f"p{i}")) == 1 for i in range(pods))


def test_every_namespace_costs_its_own_reads_and_watch_but_no_pod_does(monkeypatch):
    api = seeded(4, ("a", "b", "c"))
    doc = json.loads(sweep(api, monkeypatch, all_namespaces=True)[0])
    assert doc["summary"]["inspected"] == 12
    assert doc["scope"]["requests"]["by_kind"] == {
        "list pods": 1, "list services": 1,  # -A without a selector: one list each, for the cluster
        "list endpointslices": 1, "list networkpolicies": 1, "list events": 1, "list nodes": 1,  # collect.read
        "create selfsubjectaccessreviews": 6, "get namespaces": 3, "watch pods": 3,
        "patch pods/ephemeralcontainers": 12, "create pods/exec": 12}


def test_retries_are_reported_in_the_summary_and_with_v(monkeypatch):
    api = seeded(3)
    api.fail("PATCH", r"/ephemeralcontainers$", "status_429", headers={"Retry-After": "1"}, times=2)
    api.reset("PATCH", r"/ephemeralcontainers$", landed=True)
    api.fail("GET", r"/pods$", "status_503")
    out, err = sweep(api, monkeypatch, output="table")
    assert "3 of 3 pods inspected via ephemeral" in out
    # the patch whose connection broke had landed: checked (a GET), not sent again, not a retry
    assert "API: 21 requests, 3 retried (429: 2, 5xx: 1, reset: 0)" in out
    assert err.count("api: retry ") == 3  # -v: each retry as it happens
    assert err.count("failed but had taken effect: not sent again") == 1
    assert "api: 21 requests, 3 retried (429: 2, 5xx: 1, reset: 0)" in err and "     3  create pods/exec" in err
    assert all(len(api.agents("shop", f"p{i}")) == 1 for i in range(3))
