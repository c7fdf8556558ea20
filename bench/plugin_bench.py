"""End-to-end time of `kubectl sockdebug` on the local cluster: warm and cold queries of a
two-container pod, --help and completion, against raw `kubectl` and against an earlier
revision of the plugin.

    eval "$(hack/local-cluster env)"
    python3 bench/plugin_bench.py [--runs 9] [--baseline REV]

Every row is a whole process (wall clock), run in interleaved rounds so that each
comparison saw the same machine load; medians, min and max are recorded in
bench/results/plugin.md.  Both plugin versions run as a plain install would (python -S,
the packages and their dependencies on PYTHONPATH): this checkout's editable install adds
an import hook (~20 ms) that no user has; one row shows it.  Candidates for the warm
query, each measured in the same rounds:

- baseline: REV's plugin (a GET, then one Python-client exec per container, in turn);
- nothing remembered: this plugin with an unusable cache folder (GET, then the Python
  client's execs, the containers' running agents asked at once);
- client exec: the pod remembered, no kubectl on PATH (no GET; the client is imported
  and both execs run through it at once);
- kubectl: this plugin as it runs (the pod remembered: no API read, both execs through
  `kubectl exec` at once, started right after validation).

Peers named (issue 11): a one-container pod ``talker`` holds a connection to the api pod's
IP and one through a Service's ClusterIP; its warm ``-t -a`` query is measured with the
peers named (the lists of pods, Services and nodes read through three ``kubectl get --raw``
at the same time as the exec), with ``--no-peers``, and with the plugin of ``--before``
(the revision before peers were named), beside the raw exec and the three lists alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from sockdebug_agent import __version__

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work" / "plugin-bench"
IMAGE = os.environ.get("SOCKDEBUG_IMAGE", f"sockdebug-agent:{__version__}")
TESTAPP = os.environ.get("SOCKDEBUG_TESTAPP_IMAGE", f"sockdebug-testapp:{__version__}")
KUBECTL = shutil.which("kubectl") or sys.exit("kubectl is not on PATH")


def install(name: str, src: Path) -> Path:
    """bin/kubectl-sockdebug and bin/kubectl_complete-sockdebug running ``src``'s packages
    like a plain install: python -S, no .pth import hooks, bytecode compiled (pip does that;
    PYTHONDONTWRITEBYTECODE would otherwise make every run compile the plugin anew)."""
    base = WORK / name
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "plugin"), str(src / "agent")], env=env,
                   check=True, capture_output=True)
    site, bindir = base / "site", base / "bin"
    site.mkdir(parents=True, exist_ok=True)
    bindir.mkdir(exist_ok=True)
    for package, folder in (("sockdebug_plugin", "plugin"), ("sockdebug_agent", "agent")):
        link = site / package
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src / folder)
    path = f"{site}:{sysconfig.get_paths()['purelib']}"
    for script, module in (("kubectl-sockdebug", "cli"), ("kubectl_complete-sockdebug", "complete")):
        (bindir / script).write_text(
            f"#!/bin/sh\nPYTHONPATH={path} exec {sys.executable} -S -c "
            f"'import sys; from sockdebug_plugin.{module} import run; run()' \"$@\"\n")
        (bindir / script).chmod(0o755)
    return bindir


def baseline_source(rev: str) -> Path:
    src = WORK / f"src-{rev}"
    if not src.exists():
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "plugin", "agent"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src


CPU: dict[str, list[float]] = {}  #: row -> user+sys seconds of the whole process tree, per run


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every finished, waited-for descendant
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict | None = None, check: bool = True, row: str | None = None
          ) -> tuple[float, subprocess.CompletedProcess]:
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    elapsed = time.perf_counter() - t0
    if row is not None:
        CPU.setdefault(row, []).append(children_cpu() - cpu0)
    if check and proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed, proc


def kubectl(*args: str, **kw) -> subprocess.CompletedProcess:
    return timed([KUBECTL, *args], **kw)[1]


def pod(name: str, sidecar: bool = True) -> dict:
    ctx = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True},
                     "terminationGracePeriodSeconds": 0,
                     "containers": [
                         {"name": "app", "image": TESTAPP, "imagePullPolicy": "IfNotPresent", "securityContext": ctx,
                          "args": ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090"]},
                         {"name": "sidecar", "image": TESTAPP, "imagePullPolicy": "IfNotPresent",
                          "securityContext": ctx, "args": ["--listen", "0.0.0.0:15000"]}]}}
    if not sidecar:
        body["spec"]["containers"].pop()
    return body


def talker(api_ip: str, service_ip: str) -> dict:
    body = pod("talker", sidecar=False)
    body["spec"]["containers"][0]["args"] = ["--connect", f"{api_ip}:9090", "--connect", f"{service_ip}:9090"]
    return body


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--baseline", default="ba8f5e5", help="the revision to compare with (default: before issue 12)")
    ap.add_argument("--before", default="ec9adba", help="the revision before peers were named (issue 11)")
    ap.add_argument("--out", default=str(HERE / "results" / "plugin.md"))
    args = ap.parse_args()
    new_bin, old_bin = install("new", ROOT), install("baseline", baseline_source(args.baseline))
    before_bin = install("before", baseline_source(args.before))
    cache = WORK / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    no_kubectl = {**env, "PATH": str(WORK / "empty")}
    no_cache = {**no_kubectl, "XDG_CACHE_HOME": "/dev/null/nothing"}  # nothing remembered: the full path
    ns = f"sdbench-{os.urandom(3).hex()}"
    kubectl("create", "namespace", ns)
    rows: dict[str, list[float]] = {}

    def measure(row: str, cmd: list[str], environ: dict | None = None, check: bool = True) -> None:
        rows.setdefault(row, []).append(timed(cmd, environ or env, check, row)[0])

    try:
        for _ in range(60):
            if kubectl("-n", ns, "get", "serviceaccount", "default", check=False).returncode == 0:
                break
            time.sleep(0.5)
        cold = [f"{v}{i}" for i in range(args.runs) for v in ("b", "n", "d")]
        docs = "\n".join([*(json.dumps(pod(n)) for n in ["api", *cold]), json.dumps(pod("solo", sidecar=False))])
        subprocess.run([KUBECTL, "-n", ns, "apply", "-f", "-"], input=docs, text=True, check=True, capture_output=True)
        kubectl("-n", ns, "wait", "--for=condition=Ready", "pods", "--all", "--timeout=300s")
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
                   "spec": {"selector": {"app": "api"}, "ports": [{"port": 9090}]}}
        kubectl("-n", ns, "label", "pod", "api", "app=api")
        subprocess.run([KUBECTL, "-n", ns, "apply", "-f", "-"], input=json.dumps(service), text=True, check=True,
                       capture_output=True)
        api_ip = kubectl("-n", ns, "get", "pod", "api", "-o", "jsonpath={.status.podIP}").stdout
        service_ip = kubectl("-n", ns, "get", "svc", "api", "-o", "jsonpath={.spec.clusterIP}").stdout
        subprocess.run([KUBECTL, "-n", ns, "apply", "-f", "-"], input=json.dumps(talker(api_ip, service_ip)),
                       text=True, check=True, capture_output=True)
        kubectl("-n", ns, "wait", "--for=condition=Ready", "pod/talker", "--timeout=300s")
        common = ["--image", IMAGE, "--image-pull-policy", "IfNotPresent", "-n", ns]
        plugin, old = str(new_bin / "kubectl-sockdebug"), str(old_bin / "kubectl-sockdebug")
        complete = str(new_bin / "kubectl_complete-sockdebug")
        old_complete = str(old_bin / "kubectl_complete-sockdebug")
        query = ["pod/api", "--listening", *common]
        timed([plugin, *query], env)  # agents for both containers, remembered for the warm runs
        solo = ["pod/solo", "--listening", *common]
        timed([plugin, *solo], env)
        talk = ["pod/talker", "-t", "-a", *common]
        named = timed([plugin, *talk], env)[1].stdout
        if f"svc/{ns}/api:9090" not in named or f"pod/{ns}/api:9090" not in named:
            sys.exit(f"the talker's peers are not named:\n{named}")
        before = str(before_bin / "kubectl-sockdebug")
        for helper in (plugin, old):
            timed([helper, "--help"], env)  # the help cache (and .pyc files) exist before timing
        spec = json.loads(kubectl("-n", ns, "get", "pod", "api", "-o", "json").stdout)["spec"]
        agents = {c["targetContainerName"]: c["name"] for c in spec["ephemeralContainers"]}
        agent = agents["app"]
        talker_agent = json.loads(kubectl("-n", ns, "get", "pod", "talker", "-o", "json").stdout)["spec"][
            "ephemeralContainers"][0]["name"]
        lists = [[KUBECTL, "get", "--raw", f"{path}?resourceVersion=0"]
                 for path in ("/api/v1/pods", "/api/v1/services", "/api/v1/nodes")]
        both = [[KUBECTL, "-n", ns, "exec", "api", "-c", agents[c], "--", "sockdebug-agent", "sockets", "-l", "-p"]
                for c in ("app", "sidecar")]
        editable = shutil.which("kubectl-sockdebug")
        for i in range(args.runs):  # one round: every row once, in this order
            measure("kubectl version --client", [KUBECTL, "version", "--client"])
            measure("python3 -S -c pass", [sys.executable, "-S", "-c", "pass"])
            measure("help: baseline", [old, "--help"])
            measure("help: new (cached)", [plugin, "--help"])
            measure("complete flags: baseline", [old_complete, "--pro"])
            measure("complete flags: new", [complete, "--pro"])
            measure("kubectl get pods -o name", [KUBECTL, "-n", ns, "get", "pods", "-o", "name"])
            measure("complete pod names: baseline", [old_complete, "-n", ns, ""])
            measure("complete pod names: new", [complete, "-n", ns, ""])
            measure("raw kubectl exec of the agent", [KUBECTL, "-n", ns, "exec", "api", "-c", agent, "--",
                                                      "sockdebug-agent", "sockets", "-l", "-p"])
            cpu0, t0 = children_cpu(), time.perf_counter()  # the floor of a two-container query: both at once
            for proc in [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for cmd in both]:
                proc.wait()
            rows.setdefault(TWO, []).append(time.perf_counter() - t0)
            CPU.setdefault(TWO, []).append(children_cpu() - cpu0)
            measure("warm: baseline", [old, *query])
            measure("warm: new, nothing remembered (GET, client execs at once)", [plugin, *query], no_cache)
            measure("warm: new, client exec (remembered, kubectl not on PATH)", [plugin, *query], no_kubectl)
            measure("warm: new, kubectl", [plugin, *query])
            if editable:
                measure("warm: new, kubectl (editable venv)", [editable, *query])
            measure(SOLO, [plugin, *solo])
            measure(TALK_EXEC, [KUBECTL, "-n", ns, "exec", "talker", "-c", talker_agent, "--", "sockdebug-agent",
                                "sockets", "-a", "-t", "-p"])
            cpu0, t0 = children_cpu(), time.perf_counter()  # what naming peers reads, alone
            for proc in [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for cmd in lists]:
                proc.wait()
            rows.setdefault(LISTS, []).append(time.perf_counter() - t0)
            CPU.setdefault(LISTS, []).append(children_cpu() - cpu0)
            measure(TALK_BEFORE, [before, *talk])
            measure(TALK_NAMED, [plugin, *talk])
            measure(TALK_OFF, [plugin, *talk, "--no-peers"])
            measure(WARM_BEFORE, [before, *query])
            measure("cold: baseline", [old, f"pod/b{i}", "--listening", *common])
            measure("cold: new", [plugin, f"pod/n{i}", "--listening", *common])
            t, proc = timed([KUBECTL, "debug", f"pod/d{i}", "-n", ns, f"--image={IMAGE}",
                             "--image-pull-policy=IfNotPresent", "--target=app", "--profile=general", "-c", "dbg",
                             "--attach=true", "--quiet", "--", "sockdebug-agent", "sockets", "-tlp"], env)
            if '"type":"end"' in proc.stdout:  # attach can miss a fast container: kubectl says so
                rows.setdefault("kubectl debug (one container, new each time)", []).append(t)
        version = json.loads(kubectl("version", "-o", "json", check=False).stdout or "{}").get(
            "serverVersion", {}).get("gitVersion", "?")
    finally:
        subprocess.run([KUBECTL, "delete", "namespace", ns, "--wait=false"], capture_output=True)
    write(args, rows, version)


WARM, EXEC = "warm: new, kubectl", "raw kubectl exec of the agent"
WARM_BEFORE = "warm: before peers, kubectl (--listening: no lists)"
TALK_EXEC = "raw kubectl exec of talker's agent (sockets -a -t -p)"
LISTS = "the peer lists alone: three kubectl get --raw at once (pods, services, nodes)"
TALK_BEFORE = "warm -t -a of talker: before peers"
TALK_NAMED = "warm -t -a of talker: peers named (lists next to the exec)"
TALK_OFF = "warm -t -a of talker: --no-peers"
TWO = "two raw kubectl execs at once (app's and sidecar's agents)"
SOLO = "warm: new, kubectl, a one-container pod (one exec)"
VERSION, GET = "kubectl version --client", "kubectl get pods -o name"


def write(args: argparse.Namespace, rows: dict[str, list[float]], version: str) -> None:
    med = {k: statistics.median(v) for k, v in rows.items()}

    def ms(a: str, b: str = "") -> str:
        return f"{(med[a] - (med[b] if b else 0)) * 1000:.0f}" if a in med and (not b or b in med) else "n/a"

    def cpu(a: str, b: str = "") -> str:
        if a not in CPU or (b and b not in CPU):
            return "n/a"
        return f"{(statistics.median(CPU[a]) - (statistics.median(CPU[b]) if b else 0)) * 1000:.0f}"

    def ratio(a: str, b: str) -> str:
        return f"{med[a] / med[b]:.2f}" if a in med and b in med else "n/a"

    def line(name: str) -> str:
        v = rows[name]
        cpu = f"{statistics.median(CPU[name]) * 1000:.0f}" if name in CPU else ""
        return f"| {name} | {med[name] * 1000:.0f} | {min(v) * 1000:.0f} | {max(v) * 1000:.0f} | {cpu} | {len(v)} |"

    load = os.getloadavg()
    text = "\n".join([
        "# kubectl sockdebug: warm and cold queries, --help, completion (end to end)",
        "",
        f"`python3 bench/plugin_bench.py --runs {args.runs} --baseline {args.baseline}` on Kubernetes {version} "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs shared with other work: load average "
        f"{load[0]:.1f} at the end). Whole processes, wall clock, {args.runs} interleaved rounds (every row once "
        "per round, in the order below). The pod has two containers (`app` and a `sidecar`, each holding "
        "listeners), so a query with owners asks an agent next to each. Both plugin versions run as a plain "
        "install would (`python -S`, packages on PYTHONPATH); `baseline` is the plugin before issue 12 "
        f"({args.baseline}). CPU is user+sys of the command's whole process tree (the plugin and the kubectl "
        "processes it starts), not the API server's, kubelet's or agent's.",
        "",
        "| command | median ms | min ms | max ms | median CPU ms (this machine's side) | runs |",
        "|---|---|---|---|---|---|",
        *(line(name) for name in rows),
        "",
        "Ratios of medians (the issue's targets in brackets):",
        "",
        f"- warm query / one raw `kubectl exec` of the agent: **{ratio(WARM, EXEC)}** [≤ 1.5]; the other "
        f"candidates: client exec {ratio('warm: new, client exec (remembered, kubectl not on PATH)', EXEC)}, "
        f"nothing remembered {ratio('warm: new, nothing remembered (GET, client execs at once)', EXEC)}, "
        f"baseline {ratio('warm: baseline', EXEC)}; "
        f"two raw execs at once (the floor of a two-container query) / one: {ratio(TWO, EXEC)}, warm query / "
        f"that floor: {ratio(WARM, TWO)}; a one-container pod (one exec) / one raw exec: {ratio(SOLO, EXEC)}",
        f"- where the warm query's time goes: the two execs at once take {ms(TWO)} ms ({cpu(TWO)} ms CPU in the two "
        f"kubectl processes); the plugin adds {ms(WARM, TWO)} ms ({cpu(WARM, TWO)} ms CPU: interpreter, flags, "
        "validation and the remembered pod before the execs start, then reading and rendering the answers)",
        f"- `--help` / `kubectl version --client`: **{ratio('help: new (cached)', VERSION)}** [≤ 1.5] "
        f"(baseline {ratio('help: baseline', VERSION)})",
        f"- flag completion / `kubectl version --client`: **{ratio('complete flags: new', VERSION)}** [≤ 1.5] "
        f"(baseline {ratio('complete flags: baseline', VERSION)})",
        f"- pod-name completion / `kubectl get pods -o name`: {ratio('complete pod names: new', GET)} "
        f"(baseline {ratio('complete pod names: baseline', GET)}); it needs an API call, so it is compared "
        "with kubectl's own",
        f"- cold query, new / baseline: **{ratio('cold: new', 'cold: baseline')}** [≤ 1.0]; "
        f"new / `kubectl debug`: {ratio('cold: new', 'kubectl debug (one container, new each time)')}",
        f"- peers named (issue 11, against {args.before}): a warm `--listening` query reads no list: "
        f"{ratio(WARM, WARM_BEFORE)}x before; a warm `-t -a` query of a pod with connections, peers named / "
        f"before: **{ratio(TALK_NAMED, TALK_BEFORE)}** (+{ms(TALK_NAMED, TALK_BEFORE)} ms, "
        f"+{cpu(TALK_NAMED, TALK_BEFORE)} ms CPU), `--no-peers` / before: {ratio(TALK_OFF, TALK_BEFORE)}; the "
        f"lists alone take {ms(LISTS)} ms ({cpu(LISTS)} ms CPU) and the exec alone {ms(TALK_EXEC)} ms: run at "
        "the same time, the named query costs about max(exec, lists) plus the plugin's share",
        "",
    ])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
