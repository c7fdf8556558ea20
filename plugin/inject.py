"""The agent's ephemeral-container spec, and finding a running one to reuse.

Ephemeral containers can never be removed from a pod, so the agent is started as
``sockdebug-agent serve`` (it exits by itself when idle) and later queries exec into
it; a pod gains one agent container per target container and profile (and, under
baseline/restricted when the spec does not give them, per learned uid/gid), not one
per query.  What each container was started for is written into its environment, so
the next run can tell from the pod spec alone.
"""

from __future__ import annotations

import os
from typing import Optional

from .profiles import PROFILE_ENV, Ids, Profile, needs_ids

NAME_PREFIX = "sockdebug-"
SERVE_ENV = "SOCKDEBUG_SERVE"  # exec'd queries see it and keep the serve process alive
IDS_ENV = "SOCKDEBUG_TARGET_IDS"  #: "uid:gid" the runner learned from the target's /proc
IDLE_TIMEOUT_S = 900


def container_spec(image: str, pull_policy: str, target: Optional[str], profile: Profile, command: list[str],
                   serve: bool, target_ids: Optional[str] = None) -> dict:
    """``target_ids``: "uid:gid" learned from the target (or "unknown" when that failed);
    ``target`` None: no targetContainerName (the pod's network namespace, its own PID one)."""
    env = [{"name": PROFILE_ENV, "value": profile.name}]
    if serve:
        env.append({"name": SERVE_ENV, "value": "1"})
    if target_ids is not None:
        env.append({"name": IDS_ENV, "value": target_ids})
    spec = {
        "name": NAME_PREFIX + random_suffix(),
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
    if target is None:
        del spec["targetContainerName"]
    return spec


def random_suffix() -> str:
    """Six hex digits for a container or pod name (os.urandom: ``secrets`` costs an import)."""
    return os.urandom(3).hex()


def seconds_text(seconds: float) -> str:
    """Seconds as the agent reads numbers: ASCII digits, at most three decimals here
    (``900``, ``0.5``, ``31536000``)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


def serve_command(idle_timeout: float = IDLE_TIMEOUT_S) -> list[str]:
    """``serve`` with its idle timeout (``agents`` reads it back from the spec)."""
    return ["sockdebug-agent", "serve", "--idle-timeout", seconds_text(idle_timeout)]


def env_value(container: dict, name: str) -> Optional[str]:
    """The value of environment variable ``name`` in a container spec (None: not set)."""
    for env in container.get("env") or []:
        if env.get("name") == name:
            return env.get("value")
    return None


def learned_ids(container: dict) -> Optional[Ids]:
    """The target ids an agent container was started with, when they were learned."""
    value = env_value(container, IDS_ENV) or ""
    uid, sep, gid = value.partition(":")
    if not sep or not uid.isdigit() or not gid.isdigit():
        return None
    return int(uid), int(gid)


def find_running_agent(pod: dict, target: Optional[str], image: str, profile: Optional[str], *,
                       learned: bool = False) -> Optional[str]:
    """A running ``serve`` agent container for this target container (and profile, unless
    auto; with ``learned``, only one started after learning the target's ids, even if they
    could not be learned: that is not retried while it runs), to exec into instead of
    adding another container.  The most recently started wins (the API server does not
    keep ephemeral containers in the order they were added)."""
    started = {s["name"]: (s.get("state") or {})["running"].get("startedAt") or ""
               for s in pod.get("status", {}).get("ephemeralContainerStatuses") or []
               if "running" in (s.get("state") or {})}
    candidates = [c["name"] for c in pod.get("spec", {}).get("ephemeralContainers") or []
                  if c["name"].startswith(NAME_PREFIX) and c["name"] in started
                  and c.get("targetContainerName") == target and c.get("image") == image
                  and "serve" in (c.get("command") or [])
                  and (profile is None or env_value(c, PROFILE_ENV) == profile)
                  and (not learned or env_value(c, IDS_ENV) is not None)]
    return max(candidates, key=lambda name: started[name], default=None)


def reusable_agent(pod: dict, target: Optional[str], image: str, profile: str) -> Optional[str]:
    """The running agent a query with ``--image``/``--profile`` would reuse (None: one
    would be added).  ``auto`` takes any profile; baseline/restricted on a target whose
    ids the spec does not give only take an agent started with the learned ids."""
    wanted = None if profile == "auto" else profile
    learned = wanted is not None and needs_ids(wanted, pod, target)
    return find_running_agent(pod, target, image, wanted, learned=learned)
