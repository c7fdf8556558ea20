"""TARGET words (``pod/x``, ``deploy/x``, ``svc/x``, ``node/x``, ...) to concrete pods and
containers, and pod-spec knowledge the renderers need (container names by id)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Optional

from .choices import KIND_PREFIXES, KINDS, one_of
from .errors import TargetError, UsageError

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


class TargetRef(NamedTuple):
    kind: str  #: pod | deployments | ... | service | node
    name: str


class NodeTarget(NamedTuple):
    """A node's own network namespace (node/NAME), reached through a short-lived host-network
    pod; ``purpose`` labels that pod (``node``: a node/ target, ``sweep``: sweep --via node)."""

    name: str
    purpose: str = "node"


class AgentPod(NamedTuple):
    """A running agent pod to exec into: the node-agent DaemonSet's pod on ``node``."""

    namespace: str
    pod: str
    container: str
    node: str


class Target(NamedTuple):
    """One container of one running pod to inspect.  ``container`` None: the pod's network
    namespace alone, through an agent that targets no container (no container runs
    steadily: the agent outlives their restarts, but sees none of their processes)."""

    namespace: str
    pod: dict
    container: Optional[str]

    def siblings(self) -> list[str]:
        """The pod's other running containers: their processes live in PID namespaces the
        agent of ``container`` cannot see (unless the pod shares one)."""
        if self.pod.get("spec", {}).get("shareProcessNamespace"):
            return []
        return [s["name"] for s in self.pod.get("status", {}).get("containerStatuses") or []
                if s["name"] != self.container and "running" in (s.get("state") or {})]

    @property
    def pod_name(self) -> str:
        return self.pod["metadata"]["name"]

    def owner_siblings(self, argv: list[str]) -> list[str]:
        """The siblings whose processes may own sockets a query lists (a socket list with
        owners, ``-p``): from the target's PID namespace they are invisible.  None for an
        agent without a target: it runs only where no container runs steadily, and asking
        one that comes and goes would fail the query."""
        if self.container is None:
            return []
        return self.siblings() if argv[:1] == ["sockets"] and "-p" in argv else []

    def asked_together(self, argv: list[str], has_agent: Callable[[str], bool]) -> list[str]:
        """The containers a query is run in at the same time: the target, and each owner
        sibling whose agent already runs (``has_agent``)."""
        return [self.container, *(s for s in self.owner_siblings(argv) if has_agent(s))]


def parse_target(text: str) -> TargetRef:
    """``NAME`` means a pod, as in kubectl; ``KIND/NAME`` any supported kind."""
    if not text:
        raise UsageError("no target given", "usage: kubectl sockdebug pod/NAME [options]")
    kind, sep, name = text.partition("/")
    if not sep:
        return TargetRef("pod", text)
    canonical = KINDS.get(kind.lower())
    if canonical is None:
        raise UsageError(f"unsupported target kind {kind!r} in {text!r}",
                         f"use {one_of(KIND_PREFIXES)}")
    if not name or "/" in name:
        raise UsageError(f"invalid target {text!r}", "write KIND/NAME, e.g. deploy/api")
    return TargetRef(canonical, name)


def pick_container(pod: dict, requested: Optional[str]) -> str:
    """-c, else the default-container annotation, else the first container (kubectl's rule)."""
    names = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
    if requested is not None:
        if requested not in names:
            raise TargetError(f"pod {pod['metadata']['name']} has no container {requested!r}",
                              f"containers: {', '.join(names)}")
        return requested
    annotated = (pod["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER_ANNOTATION)
    if annotated in names:
        return annotated
    if not names:
        raise TargetError(f"pod {pod['metadata']['name']} has no containers", "")
    return names[0]


def agent_container(pod: dict, requested: Optional[str], has_agent: Callable[[str], bool] = lambda name: False
                    ) -> Optional[str]:
    """Where an agent reads a pod's network namespace from, when the pod may be down: the
    container asked for (``-c``, else the default one) when it runs steadily; else a
    steadily running one, one whose agent already runs first; None when none does
    (crash-looping, waiting): the agent then targets no container.  An agent next to a
    container that crash-loops would die with it (it shares its PID namespace)."""
    from . import podspec  # its patterns cost a warm query's start-up, which never needs them

    chosen = pick_container(pod, requested)
    running = podspec.running_containers(pod)
    steady = [c["name"] for c in podspec.containers(pod)
              if c["name"] in running and not podspec.trouble(pod, c["name"])]
    if chosen in steady:
        return chosen
    return next((name for name in steady if has_agent(name)), steady[0] if steady else None)


def check_running(pod: dict, container: str) -> None:
    name = pod["metadata"]["name"]
    phase = pod.get("status", {}).get("phase")
    if phase != "Running":
        raise TargetError(f"pod {name} is {phase or 'not running'}, not Running",
                          "inspect a running pod: its network namespace exists only while it runs")
    for status in pod["status"].get("containerStatuses") or []:
        if status.get("name") == container and "running" not in (status.get("state") or {}):
            state = next(iter(status.get("state") or {"unknown": {}}))
            reason = (status["state"].get(state) or {}).get("reason", "") if status.get("state") else ""
            raise TargetError(f"container {container} of pod {name} is {state} {reason}".rstrip(),
                              "targetContainerName needs a running container: pick another with -c, "
                              "or wait until it runs")


def selector_string(match_labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


def workload_selector(obj: dict) -> str:
    """A workload's spec.selector as a label selector string (matchLabels and
    matchExpressions In/NotIn/Exists/DoesNotExist)."""
    sel = obj.get("spec", {}).get("selector") or {}
    parts = [selector_string(sel.get("matchLabels") or {})] if sel.get("matchLabels") else []
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    if not parts:
        raise TargetError(f"{obj.get('kind', 'object')} {obj['metadata']['name']} has no pod selector", "")
    return ",".join(parts)


def running_pods(pods: list[dict]) -> list[dict]:
    """Running pods first, oldest first (stable choice of 'one pod of it')."""
    live = [p for p in pods if p.get("status", {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]
    return sorted(live, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))


def container_ids(pod: dict) -> dict[str, str]:
    """64-hex container id -> container name, from every container status of the pod."""
    status = pod.get("status", {})
    out = {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for s in status.get(key) or []:
            cid = (s.get("containerID") or "").rpartition("://")[2]
            if cid:
                out[cid] = s["name"]
    return out


def resolve(kube, ref: TargetRef, namespace: str, container: Optional[str], *, all_pods: bool = False
            ) -> list[Target]:
    """The running pods (and containers) a pod/workload/service target stands for."""
    if ref.kind == "node":
        raise UsageError("node targets are resolved by the node runner", "")
    if ref.kind == "pod":
        pod = get_pod(kube, namespace, ref.name)
        chosen = pick_container(pod, container)
        check_running(pod, chosen)
        return [Target(namespace, pod, chosen)]
    what, selector_text, every = selected_pods(kube, ref, namespace)
    all_pods = all_pods or ref.kind == "service"  # a Service's answer is about all of its pods
    pods = running_pods(every)
    if not pods:
        raise TargetError(f"{what} has no running pods (selector {selector_text})",
                          "check `kubectl get pods -l " + selector_text + "`")
    chosen_pods = pods if all_pods else pods[:1]
    out = []
    for pod in chosen_pods:
        name = pick_container(pod, container)
        check_running(pod, name)
        out.append(Target(namespace, pod, name))
    return out


def get_pod(kube, namespace: str, name: str) -> dict:
    """The pod, or a TargetError that names the pods there are."""
    try:
        return kube.get_pod(namespace, name)
    except TargetError as exc:
        raise TargetError(exc.cause, _existing_pods_hint(kube, namespace)) from None


def selected_pods(kube, ref: TargetRef, namespace: str) -> tuple[str, str, list[dict]]:
    """(what, label selector, every pod it selects, in any phase) of a Service or workload target."""
    if ref.kind == "service":
        svc = kube.get_service(namespace, ref.name)
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            raise TargetError(f"service {ref.name} has no selector (its endpoints are managed by hand)",
                              "target the pods directly: kubectl sockdebug pod/NAME")
        what, selector_text = f"service {ref.name}", selector_string(selector)
    else:
        obj = kube.get_workload(namespace, ref.kind, ref.name)
        what, selector_text = f"{ref.kind[:-1]} {ref.name}", workload_selector(obj)
    return what, selector_text, kube.list_pods(namespace, selector_text)


def _existing_pods_hint(kube, namespace: str) -> str:
    """What does exist, for a 'not found' error (kubectl debug's habit of naming the cause)."""
    try:
        names = sorted(p["metadata"]["name"] for p in kube.list_pods(namespace))
    except Exception:  # listing is a courtesy: never hide the original error behind another one
        return "check the name and the namespace (-n NAMESPACE)"
    if not names:
        return f"namespace {namespace} has no pods: is -n right? (the default is the context's namespace)"
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"pods in namespace {namespace}: {shown}"


def target_info(t: object) -> dict:
    """What the renderers print about a target (kind, namespace, name, container, node)."""
    if isinstance(t, NodeTarget):
        return {"kind": "node", "name": t.name}
    assert isinstance(t, Target)
    return {"kind": "pod", "namespace": t.namespace, "name": t.pod_name, "container": t.container,
            "node": t.pod.get("spec", {}).get("nodeName")}
