"""Security profiles, the agent's ephemeral-container spec, waiting for it, and reuse.

Ephemeral containers can never be removed from a pod, so the agent is started as
``sockdebug-agent serve`` (it exits by itself when idle) and later queries exec into
it; a pod gains one agent container per target container and profile, not one per
query.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, NamedTuple, Optional

from .errors import InjectError, UsageError

PROFILES = ("auto", "general", "baseline", "restricted", "netadmin")
PSA_LABEL = "pod-security.kubernetes.io/enforce"
# The strongest profile each Pod Security level admits (adding SYS_PTRACE needs privileged).
PROFILE_FOR_LEVEL = {"privileged": "general", "baseline": "baseline", "restricted": "restricted"}
STEP_DOWN = {"general": "baseline", "baseline": "restricted", "netadmin": "baseline"}
NAME_PREFIX = "sockdebug-"
PROFILE_ENV = "SOCKDEBUG_PROFILE"
SERVE_ENV = "SOCKDEBUG_SERVE"  # exec'd queries see it and keep the serve process alive
IDLE_TIMEOUT_S = 900
NOBODY = 65534

# Waiting reasons that will not resolve by waiting longer.
FATAL_WAITING = {
    "ErrImagePull": "the agent image could not be pulled",
    "ImagePullBackOff": "the agent image could not be pulled",
    "ErrImageNeverPull": "the agent image is not on the node and --image-pull-policy is Never",
    "InvalidImageName": "the agent image name is invalid",
    "CreateContainerConfigError": "the kubelet could not configure the agent container",
    "CreateContainerError": "the container runtime could not create the agent container",
    "RunContainerError": "the container runtime could not start the agent container",
}


class Profile(NamedTuple):
    name: str
    security_context: dict[str, Any]
    cost: Optional[str]  #: what this profile cannot show, said to the user; None = nothing


def target_ids(pod: dict, container: str) -> tuple[Optional[int], Optional[int]]:
    """The uid/gid the target container runs as, when the spec says (container level wins)."""
    spec = pod.get("spec", {})
    pod_ctx = spec.get("securityContext") or {}
    ctx: dict = {}
    for c in spec.get("containers", []):
        if c.get("name") == container:
            ctx = c.get("securityContext") or {}
    uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    return uid, gid


def build_profile(name: str, pod: dict, container: str) -> Profile:
    """The ephemeral container's securityContext for a profile.

    Without CAP_SYS_PTRACE the kernel lets a process read another's /proc/PID/fd only
    with the same uid and gid, so the weaker profiles run as the target's ids when the
    pod spec gives them: owners then stay visible under baseline and restricted.
    """
    uid, gid = target_ids(pod, container)
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
    if uid is None or gid is None:
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
            owners_cost = (f"process owners are not shown: under Pod Security 'restricted' the agent cannot "
                           f"have CAP_SYS_PTRACE, and container {container!r} does not run as a known "
                           "non-root uid the agent could share")
        return Profile(name, ctx, owners_cost)
    raise UsageError(f"unknown profile {name!r}", f"use one of: {', '.join(PROFILES)}")


def choose_profile(requested: str, namespace_labels: Optional[dict]) -> str:
    """``auto``: the strongest profile the namespace's enforce level admits (general when
    the labels cannot be read; a rejection then steps down, see STEP_DOWN)."""
    if requested != "auto":
        return requested
    level = (namespace_labels or {}).get(PSA_LABEL, "privileged")
    return PROFILE_FOR_LEVEL.get(level, "restricted")


def container_spec(image: str, pull_policy: str, target: str, profile: Profile, command: list[str],
                   serve: bool) -> dict:
    env = [{"name": PROFILE_ENV, "value": profile.name}]
    if serve:
        env.append({"name": SERVE_ENV, "value": "1"})
    return {
        "name": NAME_PREFIX + secrets.token_hex(3),
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": command,
        "targetContainerName": target,
        "securityContext": profile.security_context,
        "env": env,
        "stdin": False,
        "tty": False,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def serve_command(idle_timeout: int = IDLE_TIMEOUT_S) -> list[str]:
    return ["sockdebug-agent", "serve", "--idle-timeout", str(idle_timeout)]


def _profile_of(container: dict) -> Optional[str]:
    for env in container.get("env") or []:
        if env.get("name") == PROFILE_ENV:
            return env.get("value")
    return None


def find_running_agent(pod: dict, target: str, image: str, profile: Optional[str]) -> Optional[str]:
    """A running ``serve`` agent container for this target container (and profile, unless
    auto), to exec into instead of adding another container."""
    running = {s["name"] for s in pod.get("status", {}).get("ephemeralContainerStatuses") or []
               if "running" in (s.get("state") or {})}
    for c in reversed(pod.get("spec", {}).get("ephemeralContainers") or []):
        if (c["name"].startswith(NAME_PREFIX) and c["name"] in running
                and c.get("targetContainerName") == target and c.get("image") == image
                and "serve" in (c.get("command") or [])
                and (profile is None or _profile_of(c) == profile)):
            return c["name"]
    return None


def status_of(pod: dict, name: str) -> dict:
    for s in pod.get("status", {}).get("ephemeralContainerStatuses") or []:
        if s.get("name") == name:
            return s
    return {}


def wait_started(watch, name: str, timeout: float, *, one_shot: bool) -> dict:
    """Follow the pod until container ``name`` runs (or, for a one-shot agent, has run);
    fail fast with the kubelet's reason when it cannot start."""
    last = "not created yet"
    for pod in watch:
        state = status_of(pod, name).get("state") or {}
        if "running" in state:
            return pod
        if "terminated" in state:
            term = state["terminated"]
            if one_shot:
                return pod
            raise InjectError(f"the agent container exited at once ({term.get('reason')}, exit code "
                              f"{term.get('exitCode')}): {(term.get('message') or '').strip()[:300]}",
                              "look at `kubectl logs POD -c " + name + "`")
        waiting = state.get("waiting")
        if waiting:
            reason = waiting.get("reason", "")
            last = f"waiting: {reason} {waiting.get('message', '')}".strip()
            if reason in FATAL_WAITING:
                raise InjectError(f"{FATAL_WAITING[reason]} ({reason}: {waiting.get('message', '').strip()})",
                                  _pull_hint(reason))
    raise InjectError(f"the agent container did not start within {timeout:g}s ({last})",
                      "raise --timeout; check `kubectl describe pod` for events (image pulls, node pressure)")


def _pull_hint(reason: str) -> str:
    if reason in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"):
        return ("check --image and --image-pull-policy; on kind: `kind load docker-image IMAGE`; "
                "offline: import the image into the node's runtime (docs/image.md)")
    return "see `kubectl describe pod` for the kubelet's events"


def deadline(timeout: float) -> float:
    return time.monotonic() + timeout
