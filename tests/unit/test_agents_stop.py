"""``agents`` (rows from the pod JSON the API double keeps, built from answers recorded on
the local cluster) and ``stop``'s planning and error paths on the API double.  The e2e
suite proves both on the real cluster."""

from __future__ import annotations

import copy
import io
import json
import re

import pytest
from kube_double import RUNNING, ApiDouble, Exec
from sockdebug_plugin import agents, cache, inject, kube, options, output, profiles, stop, warm
from sockdebug_plugin.agents import timestamp
from sockdebug_plugin.errors import EXIT_ACCESS, AgentError, SockdebugError
from sockdebug_plugin.options import Conn, Printing, StopOptions

IMAGE = "sockdebug-agent:kubectl"
STARTED = timestamp(RUNNING["state"]["running"]["startedAt"])


@pytest.fixture
def api(monkeypatch, tmp_path) -> ApiDouble:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    api = ApiDouble()
    api.add_pod("shop", "api")
    monkeypatch.setattr(kube, "connect", lambda *a, **kw: api.kube())
    return api


def add_agent(api: ApiDouble, container: str, profile: str = "general", command=None, ids=None) -> str:
    pod = api.pods[("shop", "api")]
    spec = inject.container_spec(IMAGE, "IfNotPresent", container, profiles.for_container(profile, pod, container),
                                 command or inject.serve_command(), serve=command is None, target_ids=ids)
    api.kube().add_ephemeral_container("shop", "api", spec)
    list(api._watch("shop", "api"))  # it runs (recorded status)
    return spec["name"]


def add_node_pods(api: ApiDouble) -> None:
    body = profiles.node_pod("sockdebug-node-4d5e6f", "worker-1", IMAGE, "IfNotPresent",
                             ["sockdebug-agent", "sockets", "-tl"], profiles.for_node("auto"), "node")
    api.kube().create_pod("shop", body)
    daemon = copy.deepcopy(body)
    daemon["metadata"].update(name="sockdebug-node-agent-x7k2p", namespace="sockdebug-system",
                              labels={profiles.NODE_POD_LABEL: profiles.NODE_POD_NAME,
                                      "app.kubernetes.io/component": "daemonset"})
    daemon["spec"]["containers"][0]["command"] = ["sockdebug-agent", "serve", "--idle-timeout", "31536000"]
    daemon["status"] = {"phase": "Running", "containerStatuses": [{**RUNNING, "name": "agent"}]}
    api.pods[("sockdebug-system", daemon["metadata"]["name"])] = daemon


def every_pod(api: ApiDouble) -> list[dict]:
    return [copy.deepcopy(p) for p in api.pods.values()]


@pytest.fixture
def scene(api) -> dict[str, str]:
    """Two serve agents (one started with learned ids), an ended one-shot, a node pod and
    a DaemonSet pod."""
    names = {"app": add_agent(api, "app"),
             "sidecar": add_agent(api, "sidecar", "restricted", ids="1000:1000"),
             "one-shot": add_agent(api, "app", command=["sockdebug-agent", "sockets", "-tl"])}
    statuses = api.pods[("shop", "api")]["status"]["ephemeralContainerStatuses"]
    for s in statuses:
        if s["name"] == names["one-shot"]:
            s["state"] = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-12-01T09:17:40Z",
                                         "finishedAt": "2026-12-01T09:17:42Z"}}
    add_node_pods(api)
    return names


# --- agents ---------------------------------------------------------------------------------------

def test_every_agent_from_pod_specs_and_statuses(api, scene):
    rows = agents.agent_rows(every_pod(api), now=STARTED + 60)
    by_container = {(r["pod"], r["container"]): r for r in rows}
    app = by_container[("api", scene["app"])]
    assert app["kind"] == "ephemeral" and app["target"] == "app" and app["profile"] == "general"
    assert app["mode"] == "serve" and app["state"] == "Running" and app["idle_timeout_s"] == 900
    assert app["idle_left_min_s"] == 840 and app["idle_left_max_s"] == 900 and app["age_s"] == 60
    side = by_container[("api", scene["sidecar"])]
    assert side["profile"] == "restricted" and side["target_ids"] == "1000:1000" and side["target"] == "sidecar"
    once = by_container[("api", scene["one-shot"])]
    assert once["mode"] == "one-shot" and once["state"] == "Terminated" and once["reason"] == "Completed"
    assert once["idle_left_max_s"] is None and once["exit_code"] == 0
    node = by_container[("sockdebug-node-4d5e6f", "agent")]
    assert node["kind"] == "node-pod" and node["target"] == "node/worker-1" and node["state"] == "Pending"
    assert node["profile"] == "general"  # profiles.node_pod records it as the agent containers do
    daemon = by_container[("sockdebug-node-agent-x7k2p", "agent")]
    assert daemon["kind"] == "daemonset" and daemon["idle_timeout_s"] == 31536000
    assert next(r["container"] for r in rows if r["pod"] == "api") == scene["one-shot"]  # started first
    assert all(set(r) == set(agents.FIELDS) for r in rows)


def test_pods_without_agents_are_not_listed():
    pod = {"metadata": {"name": "web", "namespace": "shop"},
           "spec": {"ephemeralContainers": [{"name": "debugger-abc", "image": "busybox"}]}}
    assert agents.agent_rows([pod]) == []


@pytest.mark.parametrize(("age", "text"), [
    (60, ">=14m"), (899, ">=1s"), (900, "<=15m"), (5000, "<=15m")])
def test_idle_left_is_given_as_bounds(api, scene, age, text):
    rows = agents.agent_rows(every_pod(api), now=STARTED + age)
    app = next(r for r in rows if r["container"] == scene["app"])
    assert agents.idle_left_text(app) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (119, "119s"), (120, "2m"), (200, "3m20s"), (599, "9m59s"), (600, "10m"), (10799, "179m"),
    (10800, "3h"), (3 * 3600 + 60, "3h1m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (3 * 86400 + 4 * 3600, "3d4h"), (8 * 86400, "8d"), (729 * 86400, "729d"), (730 * 86400, "2y"),
    (3 * 365 * 86400 + 86400, "3y1d"), (9 * 365 * 86400, "9y"), (-5, "<invalid>")])
def test_age_is_kubectls_human_duration(seconds, text):
    assert agents.human_duration(seconds) == text


def test_agents_table_as_kubectl_lays_it_out(api, scene):
    rows = agents.agent_rows(every_pod(api), now=STARTED + 60)
    text = agents.table_text(rows, output.Style(), namespaces=False)
    lines = text.splitlines()
    assert lines[0].split() == ["POD", "CONTAINER", "TARGET", "PROFILE", "STATE", "AGE", "IDLE-LEFT"]
    assert lines[0].index("CONTAINER") == len("api") + 3 + len("sockdebug-node-agent-x7k2p") - 3  # widest + 3
    app = next(line for line in lines if scene["app"] in line).split()
    assert app == ["api", scene["app"], "app", "general", "Running", "60s", ">=14m"]
    assert "node/worker-1" in text and "Pending" in text
    bare = agents.table_text(rows, output.Style(show_headers=False), namespaces=False)
    assert bare.splitlines() == lines[1:]
    wide = agents.table_text(rows, output.Style(wide=True), namespaces=True).splitlines()
    assert wide[0].split() == ["NAMESPACE", "POD", "CONTAINER", "TARGET", "PROFILE", "STATE", "AGE", "IDLE-LEFT",
                               "MODE", "REASON", "IDLE-TIMEOUT", "NODE", "IMAGE"]
    assert any("31536000s" in line and line.startswith("sockdebug-system") for line in wide)


def test_agents_command_through_the_output_function(api, scene, capsys):
    opts = options.build(options.flags.parse(["agents", "-o", "custom-columns=CONTAINER:.container,LEFT:"
                                              ".idle_left_max_s", "--sort-by=.container"]))
    opts.validate()
    assert agents.run(opts) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CONTAINER", "LEFT"]
    names = [line.split()[0] for line in lines[1:]]
    # --sort-by orders strings naturally, as kubectl does (the container names end in random hex)
    natural = [n for _, n in sorted(([int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)], n) for n in names)]
    assert names == natural and "agent" in names  # the node pod of namespace shop
    assert agents.run(options.build(options.flags.parse(["agents", "-A", "-o", "json"]))) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "AgentList" and len(doc["items"]) == 5  # both namespaces


def test_no_agents_says_so_as_kubectl_does(capsys, monkeypatch):
    empty = ApiDouble()
    empty.add_pod("shop", "api")
    monkeypatch.setattr(kube, "connect", lambda *a, **kw: empty.kube())
    assert agents.run(options.build(options.flags.parse(["agents"]))) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == "No sockdebug agents found in namespace shop.\n"


# --- stop ------------------------------------------------------------------------------------------

def test_plan_stops_running_serve_agents_and_deletes_node_pods(api, scene):
    actions, daemons = stop.plan(every_pod(api))
    assert sorted(actions) == sorted([stop.Action("stop", "shop", "api", scene["app"]),
                                      stop.Action("stop", "shop", "api", scene["sidecar"]),
                                      stop.Action("delete", "shop", "sockdebug-node-4d5e6f")])
    assert daemons == ["pod/sockdebug-node-agent-x7k2p -n sockdebug-system"]  # the DaemonSet's: left alone


def test_stop_ends_them_and_says_what_it_ended(api, scene, capsys):
    cache.write(warm.CACHE_NAME, {"k": {"namespace": "shop", "pod": {"metadata": {"name": "api"}}, "at": 1},
                                  "other": {"namespace": "shop", "pod": {"metadata": {"name": "web"}}, "at": 1}})
    assert stop.run(StopOptions(Conn(), "pod/api", timeout=5)) == 0
    out = capsys.readouterr()
    assert sorted(out.out.splitlines()) == sorted([f"pod/api container {scene['app']} stopped",
                                                   f"pod/api container {scene['sidecar']} stopped"])
    assert "stays in its pod's spec, as Terminated" in out.err
    states = {s["name"]: s["state"] for s in api.pods[("shop", "api")]["status"]["ephemeralContainerStatuses"]}
    assert "terminated" in states[scene["app"]] and "terminated" in states[scene["sidecar"]]
    assert list(cache.read(warm.CACHE_NAME)) == ["other"]  # the warm path will not try the ended agents
    assert stop.run(StopOptions(Conn(), all=True, timeout=5)) == 0  # the node pod is left
    assert capsys.readouterr().out == "pod/sockdebug-node-4d5e6f deleted\n"
    assert ("shop", "sockdebug-node-4d5e6f") not in api.pods
    assert stop.run(StopOptions(Conn(), all=True, timeout=5)) == 0
    assert capsys.readouterr().err == "No running sockdebug agents found in namespace shop.\n"


def test_stop_node_target_takes_the_node_pods_there(api, scene, capsys):
    assert stop.run(StopOptions(Conn(), "node/worker-2", timeout=5)) == 0
    assert "No running sockdebug agents" in capsys.readouterr().err
    assert stop.run(StopOptions(Conn(), "node/worker-1", timeout=5)) == 0
    assert capsys.readouterr().out == "pod/sockdebug-node-4d5e6f deleted\n"


def test_an_agent_that_ended_meanwhile_is_no_failure(api, scene, capsys):
    api.exited.add(scene["app"])  # exec refused: the container is gone
    assert stop.run(StopOptions(Conn(), "pod/api", timeout=5)) == 0
    assert f"pod/api container {scene['app']} had already ended" in capsys.readouterr().out


def test_without_pods_exec_stop_names_what_is_missing(api, scene, capsys):
    api.exec_denied = True
    with pytest.raises(SockdebugError) as info:
        stop.run(StopOptions(Conn(), "pod/api", timeout=5))
    assert info.value.exit_code == EXIT_ACCESS
    assert "you may not create pods/exec in namespace shop" in info.value.cause
    assert "manifests/rbac.yaml" in info.value.hint
    assert "error: pod/api -n shop container" in capsys.readouterr().err  # the other agent's failure too


def test_an_agent_image_older_than_stop_is_named(api, scene, monkeypatch):
    hello = '{"type":"hello","schema_version":1,"agent_version":"0.0.9","command":[],"kernel":"","hostname":"",' \
            '"platform":"linux","netns_inode":1,"pidns_inode":1,"euid":0}'
    refused = ('{"type":"error","code":"usage","message":"argument COMMAND: invalid choice: \'stop\' (choose from '
               '\'sockets\', \'serve\')","hint":null}')
    monkeypatch.setattr(api, "_stop", lambda ns, pod, c: Exec(
        f'{hello}\n{refused}\n{{"type":"end","records":{{}},"elapsed_ms":1,"exit_code":2}}\n'.encode(), returncode=2))
    with pytest.raises(AgentError, match="predates `sockdebug-agent stop`") as info:
        stop.run(StopOptions(Conn(), "pod/api", timeout=5), out=io.StringIO(), err=io.StringIO())
    assert "idle timeout" in info.value.hint


@pytest.mark.parametrize(("argv", "message"), [
    (["stop"], "stop needs exactly one of TARGET, -l SELECTOR or --all"),
    (["stop", "pod/x", "--all"], "stop needs exactly one of TARGET, -l SELECTOR or --all (got TARGET and --all)"),
    (["stop", "pod/x", "-A"], "-A goes with -l or --all"),
    (["stop", "pod/x", "--timeout", "0"], "--timeout must be positive"),
    (["stop", "cronjob/x"], "unsupported target kind 'cronjob'"),
])
def test_stop_usage_errors(argv, message):
    with pytest.raises(SockdebugError, match=message.replace("(", r"\(").replace(")", r"\)")):
        options.build(options.flags.parse(argv)).validate()


def test_agents_printing_defaults():
    opts = options.build(options.flags.parse(["agents"]))
    assert opts.printing == Printing() and not opts.all_namespaces
