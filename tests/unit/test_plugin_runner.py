"""The runner's paths against the in-memory API double (answers recorded on the local
cluster): reuse, inject, the agent gone between GET and exec, exec denied -> one-shot,
Pod Security step-down, image-pull failures, timeouts, learned ids, node pods deleted on
failure and on Ctrl-C, every HTTP error's mapping, and the offline (warm) runner."""

from __future__ import annotations

import pytest
from kube_double import CREATING, NEVER_PULL, PULL_FAILED, RECORDED, ApiDouble, Exec, entry
from sockdebug_plugin import inject, kube, profiles
from sockdebug_plugin.errors import (
    EXIT_ACCESS,
    EXIT_INJECT,
    EXIT_TARGET,
    AccessError,
    InjectError,
    SockdebugError,
    TargetError,
)
from sockdebug_plugin.options import AgentOptions
from sockdebug_plugin.retry import Retry
from sockdebug_plugin.runner import Runner, Stale
from sockdebug_plugin.targets import NodeTarget, Target

IMAGE = "sockdebug-agent:core"
QUERY = ["sockets", "-tl", "-p"]


@pytest.fixture
def api() -> ApiDouble:
    return ApiDouble()


def runner(api: ApiDouble, notes: list, **opts) -> Runner:
    return Runner(api.kube(), AgentOptions(IMAGE, **{"timeout": 5.0, **opts}), note=notes.append)


def target(api: ApiDouble, container: str = "app") -> Target:
    return Target("shop", api.kube().get_pod("shop", "api"), container)


def listening(records) -> dict[int, list]:
    return {r.local_port: [p["container"] for p in r.processes or []] for r in records if r.type == "socket"}


def add_running_agent(api: ApiDouble, container: str = "app", **spec_kw) -> str:
    """An agent that an earlier run left running next to ``container``."""
    pod = api.pods[("shop", "api")]
    spec = inject.container_spec(IMAGE, "IfNotPresent", container, profiles.for_container("general", pod, container),
                                 inject.serve_command(), serve=True, **spec_kw)
    api.kube().add_ephemeral_container("shop", "api", spec)
    list(api._watch("shop", "api"))  # let it run
    return spec["name"]


def verbs(api: ApiDouble) -> list[str]:
    return [m for m, _ in api.calls]


# --- containers ---------------------------------------------------------------------------------

def test_reuses_a_running_agent_without_adding_one(api):
    api.add_pod()
    name = add_running_agent(api)
    api.calls.clear()
    notes: list = []
    t = target(api)
    records = list(runner(api, notes).run(t, QUERY))
    assert sorted(r.local_port for r in records if r.type == "socket") == [8080, 9090, 15000]
    assert verbs(api) == ["GET", "EXEC"] and notes == []
    assert api.calls[-1] == ("EXEC", "/api/v1/namespaces/shop/pods/api/exec") and len(api.agents()) == 1
    assert inject.reusable_agent(t.pod, "app", IMAGE, "auto") == name


def test_adds_an_agent_waits_for_it_and_execs(api):
    api.add_pod()
    notes: list = []
    records = list(runner(api, notes).run_pod(target(api, "app")._replace(), ["sockets", "-tl"]))
    assert "PATCH" in verbs(api) and verbs(api)[-1] == "EXEC"
    assert len(api.agents()) == 1 and api.agents()[0]["targetContainerName"] == "app"
    assert any(n.startswith("adding ephemeral container sockdebug-") for n in notes)
    assert listening(records)[8080] == ["app"]


def test_run_pod_asks_running_sibling_agents_at_once_and_merges_owners(api):
    api.add_pod()
    add_running_agent(api, "app")
    add_running_agent(api, "sidecar")
    api.calls.clear()
    records = list(runner(api, []).run_pod(target(api), QUERY))
    assert listening(records) == {8080: ["app"], 15000: ["sidecar"], 9090: ["app"]}
    assert verbs(api).count("EXEC") == 2 and "PATCH" not in verbs(api)


def test_a_sibling_gains_an_agent_only_when_sockets_are_left_without_owners(api):
    api.add_pod()
    add_running_agent(api, "app")
    records = list(runner(api, []).run_pod(target(api), QUERY))
    assert listening(records)[15000] == ["sidecar"]
    assert sorted(a["targetContainerName"] for a in api.agents()) == ["app", "sidecar"]
    api.add_pod(name="other")
    list(runner(api, []).run_pod(Target("shop", api.kube().get_pod("shop", "other"), "app"), ["summary"]))
    assert not api.agents(pod="other") or all(a["targetContainerName"] == "app" for a in api.agents(pod="other"))


def test_the_agent_exiting_between_get_and_exec_is_replaced(api):
    api.add_pod()
    gone = add_running_agent(api)
    t = target(api)  # the GET saw it running
    api.exited.add(gone)
    notes: list = []
    records = list(runner(api, notes).run(t, QUERY))
    assert records[0].type == "hello"
    assert len(api.agents()) == 2 and any("adding ephemeral container" in n for n in notes)


def test_without_pods_exec_a_one_shot_agent_runs_the_query_and_its_logs_are_read(api):
    api.add_pod()
    api.exec_denied = True
    notes: list = []
    records = list(runner(api, notes).run(target(api), QUERY))
    assert sorted(r.local_port for r in records if r.type == "socket") == [8080, 9090, 15000]
    one_shot = api.agents()[0]
    assert one_shot["command"] == ["sockdebug-agent", *QUERY] and "EXEC" not in verbs(api)
    assert ("GET", "/api/v1/namespaces/shop/pods/api/log") in api.calls
    assert any("no pods/exec permission" in n for n in notes)


def test_exec_forbidden_on_a_running_agent_falls_back_to_one_shot(api):
    api.add_pod()
    add_running_agent(api)
    t = target(api)
    api.exec_denied = True
    records = list(runner(api, []).run(t, QUERY))
    assert records[-1].type == "end" and api.agents()[0]["command"] == ["sockdebug-agent", *QUERY]


def general(container: dict) -> str | None:
    caps = (container.get("securityContext") or {}).get("capabilities") or {}
    return "patch_pod_security" if "SYS_PTRACE" in caps.get("add", []) else None


def test_pod_security_steps_auto_down_from_general(api):
    api.add_pod()
    api.reject_patch = general
    notes: list = []
    list(runner(api, notes).run(target(api), QUERY))
    assert any("Pod Security rejected the general profile; trying baseline" in n for n in notes)
    agent = next(c for c in api.agents() if "serve" in c["command"])
    assert {"name": inject.PROFILE_ENV, "value": "baseline"} in agent["env"]
    assert agent["securityContext"]["runAsUser"] == 1000  # baseline learned the target's ids too


def test_pod_security_rejecting_an_explicit_profile_is_exit_5(api):
    api.add_pod()
    api.reject_patch = general
    with pytest.raises(kube.PodSecurityRejected) as err:
        list(runner(api, [], profile="general").run(target(api), QUERY))
    assert err.value.exit_code == EXIT_INJECT and "PodSecurity" in err.value.cause and "--profile" in err.value.hint


@pytest.mark.parametrize(("state", "reason"), [(NEVER_PULL, "ErrImageNeverPull"), (PULL_FAILED, None)])
def test_an_image_pull_failure_fails_fast_with_the_kubelets_reason(api, state, reason):
    api.add_pod()
    api.start = lambda c: [CREATING, state]
    with pytest.raises(InjectError) as err:
        list(runner(api, [], timeout=60.0).run(target(api), QUERY))
    waiting = state["state"]["waiting"]
    assert err.value.exit_code == EXIT_INJECT and f"({waiting['reason']}: " in err.value.cause
    assert waiting["reason"] in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull")
    assert "--image" in err.value.hint
    assert api.calls.count(("GET", "/api/v1/namespaces/shop/pods")) == 1  # the first watch: no waiting out 60 s


def test_an_agent_that_never_starts_times_out_naming_its_last_state(api):
    api.add_pod()
    api.start = lambda c: [CREATING]
    with pytest.raises(InjectError, match=r"did not start within 0.3s \(waiting: ContainerCreating\)"):
        list(runner(api, [], timeout=0.3).run(target(api), QUERY))


def test_restricted_learns_the_targets_ids_then_runs_the_agent_with_them(api):
    api.add_pod()  # its spec names no uid/gid; the image runs as 1000:1000 (recorded)
    api.labels["shop"] = {profiles.PSA_LABEL: "restricted"}
    notes: list = []
    records = list(runner(api, notes).run(target(api), QUERY))
    probe, agent = sorted(api.agents(), key=lambda c: "serve" in c["command"])
    assert probe["command"] == ["sockdebug-agent", "ids"]
    ctx = agent["securityContext"]
    assert (ctx["runAsUser"], ctx["runAsGroup"]) == (1000, 1000) and ctx["capabilities"] == {"drop": ["ALL"]}
    assert inject.learned_ids(agent) == (1000, 1000)
    assert not any("owners" in n for n in notes) and records[-1].type == "end"
    api.calls.clear()  # the next run reuses the agent with the learned ids: no probe again
    list(runner(api, notes, profile="restricted").run(target(api), QUERY))
    assert "PATCH" not in verbs(api)


def test_ids_that_cannot_be_learned_cost_owners_and_are_not_probed_again(api):
    api.add_pod()
    api.labels["shop"] = {profiles.PSA_LABEL: "restricted"}
    api.fail("GET", r"/log$", "pod_not_found")  # the probe's logs are gone
    notes: list = []
    list(runner(api, notes).run(target(api), QUERY))
    assert any("could not learn the uid/gid of app" in n for n in notes)
    assert any("process owners are not shown" in n for n in notes)
    agent = next(c for c in api.agents() if "serve" in c["command"])
    assert agent["securityContext"]["runAsUser"] == profiles.NOBODY
    assert inject.reusable_agent(api.pods[("shop", "api")], "app", IMAGE, "restricted") == agent["name"]


# --- node pods -----------------------------------------------------------------------------------

def node_pods(api: ApiDouble) -> list[str]:
    return [name for (_, name) in api.pods if name.startswith("sockdebug-")]


def test_a_node_query_creates_a_node_pod_streams_its_logs_and_deletes_it(api):
    notes: list = []
    records = list(runner(api, notes, profile="baseline").run(NodeTarget("node-1"), ["sockets", "-tl"]))
    assert records[0].type == "hello" and records[-1].type == "end"
    created = next(path for m, path in api.calls if m == "POST" and path.endswith("/pods"))
    assert created == "/api/v1/namespaces/shop/pods" and node_pods(api) == []
    assert verbs(api)[-1] == "DELETE"
    assert any("owners are shown only for processes running as root" in n for n in notes)  # --profile applied


def test_a_node_pod_is_deleted_when_it_cannot_start(api):
    api.start = lambda c: [CREATING, NEVER_PULL]
    with pytest.raises(InjectError, match="ErrImageNeverPull"):
        list(runner(api, []).run(NodeTarget("node-1"), ["sockets"]))
    assert node_pods(api) == [] and verbs(api)[-1] == "DELETE"


def test_a_node_pod_is_deleted_on_ctrl_c(api):
    def interrupt(container):
        raise KeyboardInterrupt

    api.on_logs = interrupt
    with pytest.raises(KeyboardInterrupt), runner(api, []) as r:
        list(r.run(NodeTarget("node-1"), ["sockets"]))
    assert node_pods(api) == []


def test_closing_the_runner_deletes_a_node_pod_a_worker_left_behind(api):
    r = runner(api, [])
    stream = r.run(NodeTarget("node-1"), ["sockets"])
    assert next(stream).type == "hello"  # the pod exists, its logs are being read
    assert len(node_pods(api)) == 1
    r.close()  # what the command does on the way out (also on Ctrl-C), whatever the worker does
    assert node_pods(api) == []


def test_node_pod_forbidden_or_rejected_names_the_way_out(api):
    api.fail("POST", r"/pods$", "forbidden")
    with pytest.raises(AccessError) as err:
        list(Runner(api.kube(), AgentOptions(IMAGE), node_fallback="or use --via ephemeral").run(
            NodeTarget("node-1", "sweep"), ["pods"]))
    assert "node pods need create/get/watch/delete on pods" in err.value.hint
    assert err.value.hint.endswith("or use --via ephemeral") and node_pods(api) == []
    api.fail("POST", r"/pods$", "patch_pod_security")
    with pytest.raises(InjectError, match="PodSecurity") as err:
        list(runner(api, []).run(NodeTarget("node-1"), ["sockets"]))
    assert "hostPID, hostNetwork" in err.value.hint


# --- HTTP errors, as the API server words them --------------------------------------------------

@pytest.mark.parametrize(("recorded", "kind", "code", "words"), [
    ("unauthorized", AccessError, EXIT_ACCESS, "rejected the credentials"),
    ("forbidden", kube.Forbidden, EXIT_ACCESS, "you may not get pod api in namespace shop"),
    ("pod_not_found", kube.NotFound, EXIT_TARGET, "pod api not found in namespace shop"),
    ("create_conflict", AccessError, EXIT_ACCESS, "conflict on get pod api"),
    ("patch_invalid", InjectError, EXIT_INJECT, "refused the request"),
    ("status_429", AccessError, EXIT_ACCESS, "throttling requests (429"),
    ("status_500", AccessError, EXIT_ACCESS, "failed (500)"),
    ("status_503", AccessError, EXIT_ACCESS, "failed (503)"),
    ("patch_pod_security", kube.PodSecurityRejected, EXIT_INJECT, "Pod Security admission rejected"),
])
def test_http_errors_map_to_one_error_each(api, recorded, kind, code, words):
    api.add_pod()
    api.fail("GET", r"/pods/api$", recorded)
    with pytest.raises(kind) as err:
        api.kube(policy=Retry(attempts=0)).get_pod("shop", "api")  # the error once retries give up
    assert type(err.value) is kind and err.value.exit_code == code
    assert words in err.value.cause and err.value.hint


def test_an_unreachable_api_server_is_an_access_error():
    class Down(ApiDouble):
        def request(self, *a, **kw):
            raise kube.Unreachable("connection refused")

    with pytest.raises(AccessError, match="unreachable"):
        Down().kube().get_pod("shop", "api")


@pytest.mark.parametrize(("recorded", "kind"), [
    ("exec_no_such_container", kube.NotFound),  # 400 "container x is not valid for pod y"
    ("exec_exited_container", kube.NotFound),  # 500 "container not found"
    ("exec_forbidden", kube.Forbidden),
])
def test_exec_refusals(api, recorded, kind):
    class Refusing(ApiDouble):
        def exec(self, path, query):
            raise kube.Refused(*entry(recorded))

    with pytest.raises(kind) as err:
        Refusing().kube().exec("shop", "api", "sockdebug-x", ["sockdebug-agent"])
    assert type(err.value) is kind


def test_patching_a_pod_that_went_away_is_a_target_error(api):
    with pytest.raises(TargetError, match="went away"):
        api.kube().add_ephemeral_container("shop", "nosuch", {"name": "x"})


def test_a_404_without_details_on_the_subresource_means_no_ephemeral_containers(api):
    api.add_pod()
    api.fail("PATCH", r"/ephemeralcontainers$", "subresource_not_found")
    with pytest.raises(InjectError, match="does not support ephemeral containers"):
        api.kube().add_ephemeral_container("shop", "api", {"name": "x"})


# --- the offline runner (warm queries) ----------------------------------------------------------

class Execs:
    """An execer that answers like remembered agents would, or like kubectl failing."""

    def __init__(self, fail: bool = False, stdout: str = RECORDED["exec_sockets"]["stdout"]):
        self.fail, self.stdout, self.asked = fail, stdout, []

    def exec(self, namespace, pod, container, command):
        self.asked.append(container)
        if self.fail:
            raise kube.NotFound("kubectl exec failed: container not found", None)
        out = RECORDED["exec_sockets_sidecar"]["stdout"] if container == self.sidecar else self.stdout
        return Exec(out.encode())


def offline(api: ApiDouble, execs: Execs) -> tuple[Runner, Target]:
    api.add_pod()
    add_running_agent(api, "app")
    execs.sidecar = add_running_agent(api, "sidecar")
    return Runner(None, AgentOptions(IMAGE), execer=execs), Target("shop", api.pods[("shop", "api")], "app")


def test_offline_runner_execs_remembered_agents_and_names_owners(api):
    execs = Execs()
    r, t = offline(api, execs)
    api.calls.clear()
    assert listening(list(r.run_pod(t, QUERY))) == {8080: ["app"], 15000: ["sidecar"], 9090: ["app"]}
    assert api.calls == [] and len(execs.asked) == 2


def test_offline_runner_is_stale_when_an_agent_is_gone(api):
    r, t = offline(api, Execs(fail=True))
    with pytest.raises(Stale):
        list(r.run_pod(t, QUERY))


def test_offline_runner_is_stale_when_a_container_restarted(api):
    app_id = RECORDED["pod"]["body"]["status"]["containerStatuses"][0]["containerID"].rpartition("/")[2]
    restarted = RECORDED["exec_sockets"]["stdout"].replace(app_id, "0" * 64)
    assert restarted != RECORDED["exec_sockets"]["stdout"]
    r, t = offline(api, Execs(stdout=restarted))
    with pytest.raises(Stale, match="not in the remembered pod"):
        list(r.run_pod(t, ["sockets", "-tl", "-p"]))


def test_offline_runner_never_injects(api):
    api.add_pod()
    with pytest.raises(Stale):
        list(Runner(None, AgentOptions(IMAGE), execer=Execs()).run(Target("shop", api.pods[("shop", "api")], "app"),
                                                                   QUERY))


def test_a_closed_runner_creates_no_more_node_pods(api):
    """After Ctrl-C the run's workers may still be going: none of them may add a pod the
    closing runner would never see."""
    r = runner(api, [])
    r.close()
    with pytest.raises(SockdebugError, match="no node pod is created any more"):
        list(r.run(NodeTarget("node-1"), ["sockets"]))
    assert node_pods(api) == [] and "POST" not in verbs(api)
