"""``kubectl sockdebug agents``: every agent sockdebug started, read from pod specs and
statuses (one list call; no exec).

Two kinds of agents, told apart by what sockdebug writes when it starts them:

- **agent containers**: ephemeral containers named ``sockdebug-XXXXXX`` (inject.py),
  a ``serve`` agent or a one-shot one; their environment names the profile and the
  learned ids, their command the idle timeout.  Ended ones stay in the pod spec
  (Kubernetes cannot remove an ephemeral container) and are listed as Terminated.
- **node pods** (label ``app.kubernetes.io/name=sockdebug-node-agent``): the
  short-lived pods of ``node/NAME`` and ``sweep --via node`` (component ``node`` or
  ``sweep``; they should never outlive a run) and the node-agent DaemonSet's pods
  (component ``daemonset``).

Idle time left: a ``serve`` agent exits ``--idle-timeout`` seconds after the last
query it served, and nothing in the pod's status says when that was (the agent has no
way to write there, and no file or socket of its own).  So it is given as bounds: at
most the timeout, and at least the timeout less the time since the agent started
(every query came after that).  How many queries an agent served is not knowable
either, and not shown.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Optional

from . import output
from .inject import IDS_ENV, NAME_PREFIX, PROFILE_ENV, env_value, seconds_text
from .options import AgentsOptions
from .profiles import NODE_POD_LABEL, NODE_POD_NAME

COMPONENT_LABEL = "app.kubernetes.io/component"
NODE_POD_SELECTOR = f"{NODE_POD_LABEL}={NODE_POD_NAME}"
FIELDS = ("kind", "namespace", "pod", "container", "target", "node", "profile", "image", "mode", "state",
          "reason", "exit_code", "started", "finished", "age_s", "idle_timeout_s", "idle_left_min_s",
          "idle_left_max_s", "target_ids", "command")
"""One row of ``agents`` (its -o json items, custom-columns and --sort-by)."""
ROW_PATHS = tuple(f".{name}" for name in FIELDS)
NONE = "<none>"
UNKNOWN = "<unknown>"


# --- rows -----------------------------------------------------------------------------------

def timestamp(text: Optional[str]) -> Optional[float]:
    """An RFC 3339 time of the API (``2024-05-01T10:00:00Z``) as seconds since the epoch."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def idle_timeout(command: list[str]) -> Optional[float]:
    """The ``--idle-timeout`` of a ``serve`` command line (the agent's default when absent)."""
    if "serve" not in command:
        return None
    for i, word in enumerate(command):
        value = command[i + 1] if word == "--idle-timeout" and i + 1 < len(command) else (
            word.partition("=")[2] if word.startswith("--idle-timeout=") else None)
        if value is not None:
            try:
                return float(value)
            except ValueError:
                return None
    return 900.0  # sockdebug-agent serve's own default


def _state(status: dict) -> tuple[str, Optional[str], Optional[int], Optional[str], Optional[str]]:
    """(State, reason, exit code, started, finished) of a container status."""
    state = status.get("state") or {}
    if "running" in state:
        return "Running", None, None, (state["running"] or {}).get("startedAt"), None
    if "terminated" in state:
        t = state["terminated"] or {}
        return "Terminated", t.get("reason"), t.get("exitCode"), t.get("startedAt"), t.get("finishedAt")
    if "waiting" in state:
        return "Waiting", (state["waiting"] or {}).get("reason"), None, None, None
    return "Unknown", None, None, None, None


def _row(kind: str, pod: dict, container: dict, status: dict, target: Optional[str], now: float) -> dict[str, Any]:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    state, reason, exit_code, started, finished = _state(status)
    if not status and kind != "ephemeral":
        state, reason = (pod.get("status") or {}).get("phase") or "Pending", None
    command = list(container.get("command") or [])
    timeout = idle_timeout(command)
    began = timestamp(started) if kind == "ephemeral" else timestamp(meta.get("creationTimestamp"))
    left_min = left_max = None
    if timeout is not None and state == "Running":
        left_max = timeout
        left_min = max(0.0, timeout - (now - began)) if began is not None else 0.0
    return {
        "kind": kind, "namespace": meta.get("namespace"), "pod": meta.get("name"), "container": container.get("name"),
        "target": target, "node": spec.get("nodeName"), "profile": env_value(container, PROFILE_ENV),
        "image": container.get("image"), "mode": "serve" if timeout is not None else "one-shot",
        "state": state, "reason": reason, "exit_code": exit_code, "started": started, "finished": finished,
        "age_s": None if began is None else max(0, int(now - began)), "idle_timeout_s": timeout,
        "idle_left_min_s": None if left_min is None else int(left_min), "idle_left_max_s": left_max,
        "target_ids": env_value(container, IDS_ENV), "command": command,
    }


def agent_rows(pods: list[dict], now: Optional[float] = None) -> list[dict[str, Any]]:
    """Every agent in ``pods`` (any pods: the ones without agents are skipped), one row
    each, pod by pod, agent containers in the order they started."""
    now = time.time() if now is None else now
    rows = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        statuses = {s.get("name"): s for key in ("containerStatuses", "ephemeralContainerStatuses")
                    for s in (pod.get("status") or {}).get(key) or []}
        if labels.get(NODE_POD_LABEL) == NODE_POD_NAME:
            kind = "daemonset" if labels.get(COMPONENT_LABEL) == "daemonset" else "node-pod"
            node = (pod.get("spec") or {}).get("nodeName")
            for c in (pod.get("spec") or {}).get("containers") or []:
                rows.append(_row(kind, pod, c, statuses.get(c.get("name"), {}), f"node/{node}" if node else None,
                                 now))
            continue
        mine = [_row("ephemeral", pod, c, statuses.get(c.get("name"), {}), c.get("targetContainerName"), now)
                for c in (pod.get("spec") or {}).get("ephemeralContainers") or []
                if (c.get("name") or "").startswith(NAME_PREFIX)]
        rows += sorted(mine, key=lambda r: r["started"] or "~")  # never started: last
    return rows


# --- the table ------------------------------------------------------------------------------------

#: (unit, how many of the smaller one, below how many of it the smaller one is kept,
#: below how many the remainder is shown): apimachinery's duration.HumanDuration.
_UNITS = (("m", 60, 2, 10), ("h", 60, 3, 8), ("d", 24, 2, 8), ("y", 365, 2, 8))


def human_duration(seconds: float) -> str:
    """kubectl's AGE (k8s.io/apimachinery's duration.HumanDuration): ``45s``, ``3m20s``,
    ``25m``, ``5h10m``, ``30h``, ``3d4h``, ``40d``, ``2y30d``."""
    if int(seconds) < -1:
        return "<invalid>"
    value, unit = max(int(seconds), 0), "s"
    for name, size, keep_below, detail_below in _UNITS:
        if value < size * keep_below:
            return f"{value}{unit}"
        whole, rest = divmod(value, size)
        if whole < detail_below:
            return f"{whole}{name}{rest}{unit}" if rest else f"{whole}{name}"
        value, unit = whole, name
    return f"{value}{unit}"


def idle_left_text(row: dict[str, Any]) -> str:
    """``>=12m`` (at least, counted from the start), ``<=15m`` (the start is too long
    ago to say more), ``-`` when the agent does not idle out."""
    if row["idle_left_max_s"] is None:
        return "-"
    if row["idle_left_min_s"]:
        return ">=" + human_duration(row["idle_left_min_s"])
    return "<=" + human_duration(row["idle_left_max_s"])


def table_text(rows: list[dict[str, Any]], style: output.Style, namespaces: bool) -> str:
    """kubectl's layout: NAMESPACE with -A, then POD CONTAINER TARGET PROFILE STATE AGE
    IDLE-LEFT; wide adds MODE REASON IDLE-TIMEOUT NODE IMAGE."""
    from .printers import kubectl_table, sort_rows
    from .render import escape

    if style.sort is not None:
        rows = sort_rows(rows, style.sort)
    headers = (["NAMESPACE"] if namespaces else []) + ["POD", "CONTAINER", "TARGET", "PROFILE", "STATE", "AGE",
                                                      "IDLE-LEFT"]
    if style.wide:
        headers += ["MODE", "REASON", "IDLE-TIMEOUT", "NODE", "IMAGE"]
    body = []
    for r in rows:
        cells = ([r["namespace"]] if namespaces else []) + [
            r["pod"], r["container"], r["target"] or NONE, r["profile"] or NONE, r["state"],
            UNKNOWN if r["age_s"] is None else human_duration(r["age_s"]), idle_left_text(r)]
        if style.wide:
            timeout = r["idle_timeout_s"]
            cells += [r["mode"], r["reason"] or NONE, NONE if timeout is None else seconds_text(timeout) + "s",
                      r["node"] or NONE, r["image"] or NONE]
        body.append([escape("" if c is None else str(c)) for c in cells])
    return kubectl_table(headers, body, style.show_headers)


def view(rows: list[dict[str, Any]], namespaces: bool) -> output.View:
    return output.View(lambda: {"apiVersion": "sockdebug.io/v1", "kind": "AgentList", "items": rows},
                       output.top_rows("items"), lambda style: table_text(rows, style, namespaces))


# --- the command ------------------------------------------------------------------------------------

def run(opts: AgentsOptions, out=None, err=None) -> int:
    import sys

    from .kube import connect

    err = err or sys.stderr
    kube = connect(opts.conn.kubeconfig, opts.conn.context, opts.conn.namespace)
    pods = kube.list_pods(None if opts.all_namespaces else kube.namespace, opts.selector)
    rows = agent_rows(pods)
    if not rows:
        where = "any namespace" if opts.all_namespaces else f"namespace {kube.namespace}"
        print(f"No sockdebug agents found in {where}.", file=err)  # as kubectl's "No resources found"
        if opts.printing.kind in ("table", "wide", "custom-columns"):
            return 0
    output.emit(opts.printing, view(rows, opts.all_namespaces), out)
    return 0
