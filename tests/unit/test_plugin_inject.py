"""Security profiles (the applier for ephemeral containers and node pods), the ephemeral
container's spec, reuse of a running agent, and waiting for it to start: pure functions
on pod dicts (wait_started reads any iterable of pod states, so a list stands in for the
watch)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Optional

import pytest
from sockdebug_plugin import inject, lifecycle, profiles
from sockdebug_plugin.errors import EXIT_INJECT, InjectError, UsageError
from sockdebug_plugin.inject import (
    IDS_ENV,
    NAME_PREFIX,
    PROFILE_ENV,
    SERVE_ENV,
    container_spec,
    find_running_agent,
    serve_command,
)
from sockdebug_plugin.lifecycle import wait_started
from sockdebug_plugin.profiles import NOBODY, PSA_LABEL
from sockdebug_plugin.profiles import choose as choose_profile
from sockdebug_plugin.profiles import for_container as build_profile

IMAGE = "sockdebug-agent:0.1.0"


def pod(pod_ctx: Optional[dict] = None, app_ctx: Optional[dict] = None, sidecar_ctx: Optional[dict] = None) -> dict:
    containers = [{"name": "app", "image": "app:1"}, {"name": "sidecar", "image": "proxy:1"}]
    for c, ctx in zip(containers, (app_ctx, sidecar_ctx)):
        if ctx is not None:
            c["securityContext"] = ctx
    spec: dict = {"containers": containers}
    if pod_ctx is not None:
        spec["securityContext"] = pod_ctx
    return {"metadata": {"name": "api", "namespace": "prod"}, "spec": spec, "status": {"phase": "Running"}}


# --- build_profile -------------------------------------------------------------------------

@pytest.mark.parametrize("p", [pod(), pod({"runAsUser": 1000, "runAsGroup": 1000}), pod({"runAsNonRoot": True}),
                               pod(app_ctx={"runAsUser": 0})])
def test_general_is_root_with_sys_ptrace_whatever_the_pod_says(p):
    prof = build_profile("general", p, "app")
    assert prof.name == "general"
    assert prof.security_context == {"runAsUser": 0, "runAsNonRoot": False, "capabilities": {"add": ["SYS_PTRACE"]}}
    assert prof.cost is None  # CAP_SYS_PTRACE sees every owner


@pytest.mark.parametrize("p", [pod(), pod({"runAsUser": 1000, "runAsGroup": 1000}), pod({"runAsNonRoot": True})])
def test_netadmin_adds_net_admin_and_net_raw(p):
    prof = build_profile("netadmin", p, "app")
    ctx = prof.security_context
    assert ctx["runAsUser"] == 0 and ctx["runAsNonRoot"] is False
    assert sorted(ctx["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW", "SYS_PTRACE"]
    assert prof.cost is None


@pytest.mark.parametrize(("p", "ids"), [
    (pod({"runAsUser": 1000, "runAsGroup": 2000}), {"runAsUser": 1000, "runAsGroup": 2000}),
    (pod(app_ctx={"runAsUser": 1001, "runAsGroup": 1002}), {"runAsUser": 1001, "runAsGroup": 1002}),
    # container level wins over pod level, field by field
    (pod({"runAsUser": 1000, "runAsGroup": 2000}, app_ctx={"runAsUser": 1001}), {"runAsUser": 1001,
                                                                                "runAsGroup": 2000}),
    (pod({"runAsUser": 1000}, app_ctx={"runAsGroup": 3000}), {"runAsUser": 1000, "runAsGroup": 3000}),
    (pod({"runAsUser": 0, "runAsGroup": 0}), {"runAsUser": 0, "runAsGroup": 0}),
])
def test_baseline_shares_the_targets_known_ids_and_costs_nothing(p, ids):
    prof = build_profile("baseline", p, "app")
    assert prof.security_context == ids
    assert prof.cost is None


def test_baseline_uses_the_target_containers_ids_not_another_containers():
    p = pod({"runAsUser": 1000, "runAsGroup": 1000}, sidecar_ctx={"runAsUser": 1337, "runAsGroup": 1337})
    assert build_profile("baseline", p, "app").security_context == {"runAsUser": 1000, "runAsGroup": 1000}
    assert build_profile("baseline", p, "sidecar").security_context == {"runAsUser": 1337, "runAsGroup": 1337}


@pytest.mark.parametrize("p", [pod(), pod({"runAsUser": 1000}), pod({"runAsGroup": 1000}),
                               pod(sidecar_ctx={"runAsUser": 5, "runAsGroup": 5})])
def test_baseline_without_both_ids_says_what_it_costs(p):
    prof = build_profile("baseline", p, "app")
    assert "runAsGroup" not in prof.security_context
    assert "capabilities" not in prof.security_context
    assert prof.cost is not None
    assert "process owners" in prof.cost and "'app'" in prof.cost and "baseline" in prof.cost


def test_baseline_on_a_run_as_non_root_pod_without_a_uid_does_not_run_as_root():
    # The agent image runs as root; a pod-level runAsNonRoot applies to ephemeral containers
    # too, and the kubelet refuses to start a root container under it
    # (CreateContainerConfigError).
    prof = build_profile("baseline", pod({"runAsNonRoot": True}), "app")
    assert prof.security_context.get("runAsUser") not in (None, 0)
    assert prof.cost is not None


@pytest.mark.parametrize("p", [
    pod(), pod({"runAsNonRoot": True}), pod({"runAsUser": 0}), pod({"runAsUser": 0, "runAsGroup": 0}),
    pod({"runAsUser": 1000, "runAsGroup": 1000}, app_ctx={"runAsUser": 0}),
    pod(app_ctx={"runAsGroup": 1000}), pod(sidecar_ctx={"runAsUser": 1000, "runAsGroup": 1000}),
])
def test_restricted_never_runs_as_root_and_explains_missing_owners(p):
    prof = build_profile("restricted", p, "app")
    ctx = prof.security_context
    assert ctx["runAsUser"] == NOBODY != 0
    assert "runAsGroup" not in ctx
    assert prof.cost is not None and "process owners are not shown" in prof.cost and "'app'" in prof.cost


@pytest.mark.parametrize(("p", "uid", "gid"), [
    (pod({"runAsUser": 1000, "runAsGroup": 1000}), 1000, 1000),
    (pod(app_ctx={"runAsUser": 1001, "runAsGroup": 0}), 1001, 0),
    (pod({"runAsUser": 0, "runAsGroup": 5}, app_ctx={"runAsUser": 1002}), 1002, 5),
])
def test_restricted_with_the_targets_ids_sees_owners(p, uid, gid):
    prof = build_profile("restricted", p, "app")
    assert prof.security_context == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": uid, "runAsGroup": gid}
    assert prof.cost is None


def test_restricted_with_a_uid_but_no_gid_runs_as_that_uid_and_says_the_cost():
    prof = build_profile("restricted", pod({"runAsUser": 1000}), "app")
    assert prof.security_context["runAsUser"] == 1000
    assert "runAsGroup" not in prof.security_context
    assert prof.cost is not None and "process owners" in prof.cost


@pytest.mark.parametrize("p", [pod(), pod({"runAsUser": 0}), pod({"runAsUser": 1000, "runAsGroup": 1}),
                               pod({"runAsNonRoot": True}), pod({"runAsUser": 7})])
def test_restricted_always_passes_the_restricted_pod_security_checks(p):
    ctx = build_profile("restricted", p, "app").security_context
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] != 0
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("name", ["general", "baseline", "restricted", "netadmin"])
@pytest.mark.parametrize("p", [pod(), pod({"runAsUser": 1000}), pod({"runAsUser": 1000, "runAsGroup": 1000}),
                               pod({"runAsUser": 0, "runAsGroup": 0}), pod({"runAsNonRoot": True})])
def test_cost_is_stated_exactly_when_owners_cannot_be_seen(name, p):
    """Owners are visible with CAP_SYS_PTRACE, or without it when the agent runs with the
    target's known uid and gid (non-root under restricted)."""
    prof = build_profile(name, p, "app")
    uid, gid = profiles.target_ids(p, "app")
    ctx = prof.security_context
    sees_owners = ("SYS_PTRACE" in (ctx.get("capabilities") or {}).get("add", [])
                   or (uid is not None and gid is not None and ctx.get("runAsUser") == uid
                       and ctx.get("runAsGroup") == gid))
    assert (prof.cost is None) == sees_owners, (name, p, prof)


def test_unknown_profile():
    with pytest.raises(UsageError, match="unknown profile 'sysadmin'"):
        build_profile("sysadmin", pod(), "app")
    with pytest.raises(UsageError):
        build_profile("auto", pod(), "app")  # auto is resolved by choose_profile first


# --- choose_profile ------------------------------------------------------------------------

@pytest.mark.parametrize(("labels", "expected"), [
    (None, "general"),  # namespace labels unreadable: try the strongest, step down on rejection
    ({}, "general"),
    ({"team": "a"}, "general"),
    ({PSA_LABEL: "privileged"}, "general"),
    ({PSA_LABEL: "baseline"}, "baseline"),
    ({PSA_LABEL: "restricted"}, "restricted"),
    ({PSA_LABEL: "something-new"}, "restricted"),  # unknown level: the safest
    ({"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/audit": "restricted"},
     "general"),  # only enforce rejects
])
def test_choose_profile_auto(labels, expected):
    assert choose_profile("auto", labels) == expected


@pytest.mark.parametrize("requested", ["general", "baseline", "restricted", "netadmin"])
def test_choose_profile_explicit_wins(requested):
    assert choose_profile(requested, {PSA_LABEL: "restricted"}) == requested
    assert choose_profile(requested, None) == requested


def test_every_auto_choice_steps_down_to_restricted():
    seen, name = [], "general"
    while name is not None:
        seen.append(name)
        name = profiles.STEP_DOWN.get(name)
    assert seen == ["general", "baseline", "restricted"]
    assert profiles.STEP_DOWN["netadmin"] == "baseline"


# --- container_spec ------------------------------------------------------------------------

def test_container_spec_fields():
    prof = build_profile("restricted", pod(), "app")
    spec = container_spec(IMAGE, "IfNotPresent", "app", prof, serve_command(), serve=True)
    assert re.fullmatch(re.escape(NAME_PREFIX) + "[0-9a-f]{6}", spec["name"])
    assert spec["image"] == IMAGE and spec["imagePullPolicy"] == "IfNotPresent"
    assert spec["targetContainerName"] == "app"
    assert spec["command"] == ["sockdebug-agent", "serve", "--idle-timeout", str(inject.IDLE_TIMEOUT_S)]
    assert spec["securityContext"] == prof.security_context
    assert {"name": PROFILE_ENV, "value": "restricted"} in spec["env"]
    assert {"name": SERVE_ENV, "value": "1"} in spec["env"]
    assert spec["stdin"] is False and spec["tty"] is False


def test_container_spec_one_shot():
    prof = build_profile("general", pod(), "sidecar")
    spec = container_spec(IMAGE, "Never", "sidecar", prof, ["sockdebug-agent", "sockets", "-l"], serve=False)
    assert spec["env"] == [{"name": PROFILE_ENV, "value": "general"}]
    assert spec["targetContainerName"] == "sidecar" and spec["imagePullPolicy"] == "Never"
    assert spec["command"] == ["sockdebug-agent", "sockets", "-l"]


def test_container_spec_names_differ():
    prof = build_profile("general", pod(), "app")
    names = {container_spec(IMAGE, "Always", "app", prof, [], serve=False)["name"] for _ in range(20)}
    assert len(names) == 20


def test_serve_command_idle_timeout():
    assert serve_command(30) == ["sockdebug-agent", "serve", "--idle-timeout", "30"]


# --- find_running_agent --------------------------------------------------------------------

def agent_container(name, target="app", image=IMAGE, profile="general", command=None):
    spec = container_spec(image, "IfNotPresent", target, build_profile(profile, pod(), target),
                          command if command is not None else serve_command(), serve=True)
    spec["name"] = name
    return spec


def with_agents(*agents: tuple[dict, str]) -> dict:
    """A pod with these (ephemeral container spec, state) pairs, started in this order;
    state running|waiting|terminated.  The spec lists them newest first, as the API
    server does after strategic merge patches."""
    p = pod()
    p["spec"]["ephemeralContainers"] = [a for a, _ in reversed(agents)]
    states = {"waiting": {"waiting": {"reason": "ContainerCreating"}},
              "terminated": {"terminated": {"reason": "Completed", "exitCode": 0}}}
    p["status"]["ephemeralContainerStatuses"] = [
        {"name": a["name"], "state": {"running": {"startedAt": f"2026-01-01T00:00:{i:02d}Z"}} if s == "running"
         else states[s]} for i, (a, s) in enumerate(agents)]
    return p


def test_find_running_agent_reuses_a_running_serve_agent():
    p = with_agents((agent_container("sockdebug-aaaaaa"), "running"))
    assert find_running_agent(p, "app", IMAGE, None) == "sockdebug-aaaaaa"
    assert find_running_agent(p, "app", IMAGE, "general") == "sockdebug-aaaaaa"


def test_find_running_agent_prefers_the_newest():
    p = with_agents((agent_container("sockdebug-old000"), "running"), (agent_container("sockdebug-new000"), "running"))
    assert find_running_agent(p, "app", IMAGE, None) == "sockdebug-new000"
    p["spec"]["ephemeralContainers"].reverse()  # the list order says nothing: the start time does
    assert find_running_agent(p, "app", IMAGE, None) == "sockdebug-new000"


@pytest.mark.parametrize("state", ["waiting", "terminated"])
def test_find_running_agent_only_running(state):
    p = with_agents((agent_container("sockdebug-aaaaaa"), state))
    assert find_running_agent(p, "app", IMAGE, None) is None


def test_find_running_agent_without_a_status_is_not_running():
    p = with_agents((agent_container("sockdebug-aaaaaa"), "running"))
    p["status"]["ephemeralContainerStatuses"] = []
    assert find_running_agent(p, "app", IMAGE, None) is None
    del p["status"]["ephemeralContainerStatuses"]
    assert find_running_agent(p, "app", IMAGE, None) is None


def test_find_running_agent_same_target_container():
    p = with_agents((agent_container("sockdebug-aaaaaa", target="sidecar"), "running"))
    assert find_running_agent(p, "app", IMAGE, None) is None
    assert find_running_agent(p, "sidecar", IMAGE, None) == "sockdebug-aaaaaa"


def test_find_running_agent_same_image():
    p = with_agents((agent_container("sockdebug-aaaaaa", image="sockdebug-agent:0.0.9"), "running"))
    assert find_running_agent(p, "app", IMAGE, None) is None


def test_find_running_agent_only_serve_agents():
    one_shot = agent_container("sockdebug-aaaaaa", command=["sockdebug-agent", "sockets", "-tlp"])
    assert find_running_agent(with_agents((one_shot, "running")), "app", IMAGE, None) is None


def test_find_running_agent_only_ours():
    debug = agent_container("debugger-abcde")  # e.g. kubectl debug with the same image
    assert find_running_agent(with_agents((debug, "running")), "app", IMAGE, None) is None


def test_find_running_agent_profile_must_match_unless_auto():
    p = with_agents((agent_container("sockdebug-rrrrrr", profile="restricted"), "running"),
                    (agent_container("sockdebug-gggggg", profile="general"), "running"))
    assert find_running_agent(p, "app", IMAGE, "restricted") == "sockdebug-rrrrrr"
    assert find_running_agent(p, "app", IMAGE, "general") == "sockdebug-gggggg"
    assert find_running_agent(p, "app", IMAGE, "netadmin") is None
    assert find_running_agent(p, "app", IMAGE, None) == "sockdebug-gggggg"  # auto: the newest


def test_find_running_agent_no_ephemeral_containers():
    assert find_running_agent(pod(), "app", IMAGE, None) is None


# --- wait_started --------------------------------------------------------------------------

NAME = "sockdebug-abc123"


def state(s: Optional[dict], name: str = NAME) -> dict:
    p = pod()
    if s is not None:
        p["status"]["ephemeralContainerStatuses"] = [{"name": name, "state": s}]
    return p


CREATING = {"waiting": {"reason": "ContainerCreating"}}
RUNNING = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}


def then_fail(*pods: dict) -> Iterator[dict]:
    """The pods, then an assertion if the caller reads on (it should have stopped)."""
    yield from pods
    raise AssertionError("wait_started read past the state it should have stopped at")


def test_wait_started_returns_the_running_pod():
    running = state(RUNNING)
    assert wait_started(then_fail(state(None), state(CREATING), running), NAME, 5, one_shot=False) is running


def test_wait_started_ignores_other_containers():
    other_failed = state({"waiting": {"reason": "ErrImagePull", "message": "old agent"}}, name="sockdebug-old000")
    running = state(RUNNING)
    assert wait_started([other_failed, running], NAME, 5, one_shot=False) is running


@pytest.mark.parametrize("reason", sorted(lifecycle.FATAL_WAITING))
def test_wait_started_fails_fast_with_the_kubelets_reason(reason):
    failing = state({"waiting": {"reason": reason, "message": f"details of {reason} "}})
    with pytest.raises(InjectError) as err:
        wait_started(then_fail(state(CREATING), failing), NAME, 60, one_shot=False)
    assert f"({reason}: details of {reason})" in err.value.cause
    assert err.value.cause.startswith(lifecycle.FATAL_WAITING[reason])
    assert err.value.hint and err.value.exit_code == EXIT_INJECT


def test_wait_started_image_pull_hint():
    failing = state({"waiting": {"reason": "ErrImagePull", "message": 'pull access denied for "nosuch:1"'}})
    with pytest.raises(InjectError) as err:
        wait_started([failing], NAME, 60, one_shot=False)
    assert "nosuch:1" in err.value.cause
    assert "--image" in err.value.hint and "--image-pull-policy" in err.value.hint


def test_wait_started_one_shot_terminated_is_done():
    done = state({"terminated": {"reason": "Completed", "exitCode": 0}})
    assert wait_started(then_fail(state(CREATING), done), NAME, 5, one_shot=True) is done


def test_wait_started_one_shot_running_is_done_too():
    running = state(RUNNING)
    assert wait_started(then_fail(running), NAME, 5, one_shot=True) is running


def test_wait_started_serve_agent_exiting_at_once_is_an_error():
    died = state({"terminated": {"reason": "Error", "exitCode": 2, "message": "usage: sockdebug-agent ...\n"}})
    with pytest.raises(InjectError) as err:
        wait_started(then_fail(died), NAME, 5, one_shot=False)
    assert err.value.cause == "the agent container exited at once (Error, exit code 2): usage: sockdebug-agent ..."
    assert f"-c {NAME}" in err.value.hint


def test_wait_started_timeout_names_the_last_state():
    with pytest.raises(InjectError) as err:
        wait_started([state(None), state({"waiting": {"reason": "ContainerCreating", "message": "pulling"}})],
                     NAME, 7.5, one_shot=False)
    assert err.value.cause == "the agent container did not start within 7.5s (waiting: ContainerCreating pulling)"
    assert "--timeout" in err.value.hint


def test_wait_started_timeout_before_any_status():
    with pytest.raises(InjectError, match=r"did not start within 3s \(not created yet\)"):
        wait_started([state(None)], NAME, 3, one_shot=False)
    with pytest.raises(InjectError, match="not created yet"):
        wait_started([], NAME, 3, one_shot=False)


# --- learned ids (the target's real uid/gid, read from its /proc by an `ids` probe) -------------

@pytest.mark.parametrize("name", ["baseline", "restricted"])
def test_learned_ids_make_the_weaker_profiles_share_them(name):
    p = pod({"runAsUser": 1000})  # no runAsGroup: the spec alone is not enough
    assert profiles.needs_ids(name, p, "app")
    prof = build_profile(name, p, "app", learned=(1000, 3000))
    assert prof.security_context["runAsUser"] == 1000 and prof.security_context["runAsGroup"] == 3000
    assert prof.cost is None


def test_learned_root_under_restricted_still_runs_as_nobody():
    prof = build_profile("restricted", pod(), "app", learned=(0, 0))
    assert prof.security_context["runAsUser"] == NOBODY and "runAsGroup" not in prof.security_context
    assert prof.cost is not None


@pytest.mark.parametrize(("name", "p", "needed"), [
    ("general", pod(), False), ("netadmin", pod(), False),
    ("baseline", pod({"runAsUser": 1, "runAsGroup": 1}), False), ("baseline", pod(), True),
    ("restricted", pod(app_ctx={"runAsGroup": 5}), True), ("restricted", pod({"runAsUser": 0, "runAsGroup": 0}), False),
])
def test_ids_are_learned_only_when_a_weaker_profile_lacks_them(name, p, needed):
    assert profiles.needs_ids(name, p, "app") is needed


def test_an_agent_started_with_learned_ids_says_so_and_is_the_one_reused():
    prof = build_profile("restricted", pod(), "app", learned=(1000, 1000))
    marked = container_spec(IMAGE, "IfNotPresent", "app", prof, serve_command(), serve=True, target_ids="1000:1000")
    assert {"name": IDS_ENV, "value": "1000:1000"} in marked["env"]
    assert inject.learned_ids(marked) == (1000, 1000)
    marked["name"] = "sockdebug-learnt"
    plain = agent_container("sockdebug-nobody", profile="restricted")
    p = with_agents((marked, "running"), (plain, "running"))
    p["spec"]["securityContext"] = {"runAsNonRoot": True}
    # the newest (plain, as nobody) would win, but restricted without spec ids wants learned ids
    assert inject.reusable_agent(p, "app", IMAGE, "restricted") == "sockdebug-learnt"
    assert inject.reusable_agent(p, "app", IMAGE, "auto") == "sockdebug-nobody"
    p["status"]["ephemeralContainerStatuses"][0]["state"] = {"terminated": {}}
    assert inject.reusable_agent(p, "app", IMAGE, "restricted") is None  # a new probe and agent, not nobody


# --- node pods: the same applier, one source of truth with manifests/node-agent.yaml ---------

def test_node_profiles():
    general = profiles.for_node("general")
    assert general == profiles.for_node("auto") and general.cost is None
    assert general.security_context["capabilities"] == {"drop": ["ALL"], "add": list(profiles.NODE_CAPABILITIES)}
    assert profiles.for_node("netadmin").security_context["capabilities"]["add"][-2:] == ["NET_ADMIN", "NET_RAW"]
    baseline = profiles.for_node("baseline")
    assert "capabilities" not in baseline.security_context and baseline.cost
    restricted = profiles.for_node("restricted").security_context
    assert restricted["runAsUser"] == NOBODY and restricted["capabilities"] == {"drop": ["ALL"]}
    with pytest.raises(UsageError):
        profiles.for_node("sysadmin")


@pytest.mark.parametrize("name", ["general", "baseline", "restricted", "netadmin"])
def test_node_pod_is_always_in_the_nodes_namespaces_and_shaped_by_the_profile(name):
    body = profiles.node_pod("p", "n1", IMAGE, "Never", ["sockdebug-agent", "sockets"], profiles.for_node(name),
                             "node")
    spec = body["spec"]
    assert spec["hostPID"] and spec["hostNetwork"] and spec["nodeName"] == "n1"
    assert spec["containers"][0]["securityContext"] == profiles.for_node(name).security_context
    assert body["metadata"]["labels"]["app.kubernetes.io/component"] == "node"


def test_the_daemonset_manifest_has_the_node_pods_shape():
    """manifests/node-agent.yaml and the code's node pod must not drift apart."""
    import pathlib

    import yaml

    path = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "node-agent.yaml"
    ds = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    body = profiles.node_pod("p", "n1", IMAGE, "Never", [], profiles.for_node("general"), "node")["spec"]
    assert {k: spec.get(k) for k in ("hostPID", "hostNetwork")} == {k: body[k] for k in ("hostPID", "hostNetwork")}
    assert spec["containers"][0]["securityContext"] == body["containers"][0]["securityContext"]
