"""Security profiles: one applier that shapes every way the agent runs (kubectl debug's
``profiles.go``): the ephemeral agent container next to a target container, and the
short-lived node pod (``node/NAME``, ``sweep --via node``), whose shape is also the
node-agent DaemonSet's (manifests/node-agent.yaml; a unit test keeps them equal).

Without CAP_SYS_PTRACE the kernel lets a process read another's /proc/PID/fd only with
the same uid and gid, so the weaker profiles run the ephemeral agent as the target's
ids when they are known (from the pod spec, or learned from the target's
/proc/PID/status by the runner): owners stay visible under baseline and restricted.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from . import choices
from .errors import UsageError

PSA_LABEL = "pod-security.kubernetes.io/enforce"
# The strongest profile each Pod Security level admits (adding SYS_PTRACE needs privileged).
PROFILE_FOR_LEVEL = {"privileged": "general", "baseline": "baseline", "restricted": "restricted"}
STEP_DOWN = {"general": "baseline", "baseline": "restricted", "netadmin": "baseline"}
NOBODY = 65534
#: What the node agent needs besides host PID and network namespaces: other processes'
#: /proc/PID/{fd,ns} (SYS_PTRACE), listing another uid's /proc/PID/fd (DAC_READ_SEARCH),
#: setns(2) into each pod's network namespace (SYS_ADMIN).
NODE_CAPABILITIES = ("SYS_PTRACE", "DAC_READ_SEARCH", "SYS_ADMIN")
#: Profiles that need to know the target's uid and gid to see owners.
SHARES_IDS = ("baseline", "restricted")

Ids = tuple[int, int]  #: (uid, gid)


class Profile(NamedTuple):
    name: str
    security_context: dict[str, Any]
    cost: Optional[str]  #: what this profile cannot show, said to the user; None = nothing


def target_ids(pod: dict, container: Optional[str]) -> tuple[Optional[int], Optional[int]]:
    """The uid/gid the target container runs as, when the spec says (container level wins)."""
    spec = pod.get("spec", {})
    pod_ctx = spec.get("securityContext") or {}
    ctx: dict = {}
    for c in spec.get("containers", []):
        if c.get("name") == container:
            ctx = c.get("securityContext") or {}
    return ctx.get("runAsUser", pod_ctx.get("runAsUser")), ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))


def needs_ids(name: str, pod: dict, container: Optional[str]) -> bool:
    """Whether ``name`` would miss owners for want of ids the pod spec does not give (an
    agent without a target container sees no other process anyway)."""
    if container is None:
        return False
    uid, gid = target_ids(pod, container)
    return name in SHARES_IDS and (uid is None or gid is None)


def choose(requested: str, namespace_labels: Optional[dict]) -> str:
    """``auto``: the strongest profile the namespace's enforce level admits (general when
    the labels cannot be read; a rejection then steps down, see STEP_DOWN)."""
    if requested != "auto":
        return requested
    level = (namespace_labels or {}).get(PSA_LABEL, "privileged")
    return PROFILE_FOR_LEVEL.get(level, "restricted")


def _unknown(name: str) -> UsageError:
    return UsageError(f"unknown profile {name!r}", f"use {choices.one_of(choices.PROFILES[1:])}")


def for_container(name: str, pod: dict, container: Optional[str], learned: Optional[Ids] = None) -> Profile:
    """The ephemeral agent container's securityContext for a profile; ``learned`` = the
    target's real (uid, gid), when the runner read them from its /proc."""
    uid, gid = learned if learned is not None else target_ids(pod, container)
    same_ids: dict[str, Any] = {}
    if uid is not None:
        same_ids["runAsUser"] = uid
        if gid is not None:
            same_ids["runAsGroup"] = gid
    if name == "general":
        # Root (overriding a pod-level runAsNonRoot/runAsUser) so the added capability is
        # effective: added capabilities never are for a non-root uid.
        return Profile(name, {"runAsUser": 0, "runAsNonRoot": False,
                              "capabilities": {"add": ["SYS_PTRACE"]}}, None)
    if name == "netadmin":
        return Profile(name, {"runAsUser": 0, "runAsNonRoot": False,
                              "capabilities": {"add": ["NET_ADMIN", "NET_RAW", "SYS_PTRACE"]}}, None)
    owners_cost = None
    if container is not None and (uid is None or gid is None):
        owners_cost = (f"process owners are shown only for processes running as the agent's own uid: the "
                       f"{name} profile cannot add CAP_SYS_PTRACE and the pod spec does not say which "
                       f"uid/gid container {container!r} runs as")
    if name == "baseline":
        if uid is None and (pod.get("spec", {}).get("securityContext") or {}).get("runAsNonRoot"):
            # the pod's runAsNonRoot covers ephemeral containers too, and the agent image is root
            same_ids = {"runAsUser": NOBODY}
        return Profile(name, same_ids, owners_cost)
    if name == "restricted":
        ctx = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
               "seccompProfile": {"type": "RuntimeDefault"}, **same_ids}
        if not uid:  # restricted forbids uid 0; without the target's ids run as nobody
            ctx["runAsUser"] = NOBODY
            ctx.pop("runAsGroup", None)
            owners_cost = None if container is None else (
                f"process owners are not shown: under Pod Security 'restricted' the agent cannot "
                f"have CAP_SYS_PTRACE, and container {container!r} does not run as a known "
                "non-root uid the agent could share")
        return Profile(name, ctx, owners_cost)
    raise _unknown(name)


def for_node(name: str) -> Profile:
    """The node pod's container securityContext (host PID and network namespaces come
    with the pod, see ``node_pod``).  ``auto`` means general here: a namespace that
    admits host namespaces admits the capabilities too."""
    base = {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True}
    if name in ("auto", "general"):
        return Profile("general", {**base, "capabilities": {"drop": ["ALL"], "add": list(NODE_CAPABILITIES)}}, None)
    if name == "netadmin":
        return Profile(name, {**base, "capabilities": {"drop": ["ALL"], "add": [
            *NODE_CAPABILITIES, "NET_ADMIN", "NET_RAW"]}}, None)
    if name == "baseline":
        return Profile(name, base, "process owners are shown only for processes running as root: the baseline "
                       "profile adds no CAP_SYS_PTRACE to the node agent")
    if name == "restricted":
        return Profile(name, {"runAsUser": NOBODY, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                              "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                              "seccompProfile": {"type": "RuntimeDefault"}},
                       "process owners are not shown: the restricted profile runs the node agent as nobody "
                       "without capabilities")
    raise _unknown(name)


NODE_POD_LABEL = "app.kubernetes.io/name"
NODE_POD_NAME = "sockdebug-node-agent"
PROFILE_ENV = "SOCKDEBUG_PROFILE"  #: the profile an agent was started with (``agents`` shows it)


def node_pod(name: str, node: str, image: str, pull_policy: str, command: list[str], profile: Profile,
             purpose: str) -> dict:
    """A short-lived pod on ``node`` in the node's PID and network namespaces (as
    ``kubectl debug node/`` makes), shaped by ``profile``; ``purpose`` labels it."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {NODE_POD_LABEL: NODE_POD_NAME, "app.kubernetes.io/component": purpose}},
        "spec": {
            "nodeName": node, "hostNetwork": True, "hostPID": True, "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}], "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "agent", "image": image, "imagePullPolicy": pull_policy, "command": command,
                            "securityContext": profile.security_context,
                            "env": [{"name": PROFILE_ENV, "value": profile.name}]}],
        },
    }
