"""``kubectl_complete-sockdebug``: shell completion through kubectl (>= 1.26).

kubectl runs this with the words typed after ``kubectl sockdebug`` (the last one
being the word under completion) and expects one candidate per line, then a
``:DIRECTIVE`` line (cobra's ShellCompDirective; 4 = no file completion).
Completion never fails loudly: without a cluster it just offers fewer candidates.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

NO_FILE_COMP = 4
FLAGS = (
    "--namespace", "--all-namespaces", "--selector", "--all-pods", "--context", "--kubeconfig", "--container",
    "--output", "--listening", "--all", "--tcp", "--udp", "--unix", "--raw", "--ipv4", "--ipv6", "--processes",
    "--no-processes", "--timers", "--extended", "--memory", "--info", "--summary", "--routes", "--interfaces",
    "--limits", "--watch", "--profile", "--image", "--image-pull-policy", "--timeout", "--help",
)
VALUE_FLAGS = {"-n", "--namespace", "--context", "--kubeconfig", "-c", "--container", "-o", "--output", "-l",
               "--selector", "--profile", "--image", "--image-pull-policy", "--timeout", "--fail-on", "--via"}
FIXED_VALUES = {
    "-o": ("table", "wide", "json", "yaml", "jsonl"), "--output": ("table", "wide", "json", "yaml", "jsonl"),
    "--profile": ("auto", "general", "baseline", "restricted", "netadmin"),
    "--image-pull-policy": ("Always", "IfNotPresent", "Never"),
    "--fail-on": ("warning", "critical"), "--via": ("ephemeral", "node"),
}
KIND_PREFIXES = ("pod/", "deploy/", "sts/", "ds/", "rs/", "job/", "svc/", "node/")
SUBCOMMANDS = ("sweep", "triage", "version")
# TARGET prefix -> how to list names of that kind: (API path inside a namespace, cluster-wide?)
_LIST_PATHS = {"pod": "/api/v1/namespaces/{ns}/pods", "deploy": "/apis/apps/v1/namespaces/{ns}/deployments",
               "sts": "/apis/apps/v1/namespaces/{ns}/statefulsets", "ds": "/apis/apps/v1/namespaces/{ns}/daemonsets",
               "rs": "/apis/apps/v1/namespaces/{ns}/replicasets", "job": "/apis/batch/v1/namespaces/{ns}/jobs",
               "svc": "/api/v1/namespaces/{ns}/services", "node": "/api/v1/nodes"}


def _option(words: Sequence[str], *names: str) -> Optional[str]:
    for i, w in enumerate(words[:-1]):
        if w in names:
            return words[i + 1]
        for n in names:
            if n.startswith("--") and w.startswith(n + "="):
                return w.split("=", 1)[1]
    return None


def _positionals(words: Sequence[str]) -> list[str]:
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w.startswith("-"):
            skip = w in VALUE_FLAGS
            continue
        out.append(w)
    return out


def _kube(words: Sequence[str]):
    from .kube import Kube

    return Kube(kubeconfig=_option(words, "--kubeconfig"), context=_option(words, "--context"),
                namespace=_option(words, "-n", "--namespace"), request_timeout=5)


def _names(kube, kind: str) -> list[str]:
    path = _LIST_PATHS[kind].format(ns=kube.namespace)
    items = kube._request("GET", path, what=("list", kind, kube.namespace))["items"]
    return [i["metadata"]["name"] for i in items]


def candidates(words: Sequence[str]) -> list[str]:
    """Completion candidates for the last word of ``words`` (the words after the plugin name)."""
    words = list(words) or [""]
    partial, before = words[-1], words[:-1]
    prev = before[-1] if before else None
    if prev in FIXED_VALUES:
        return [v for v in FIXED_VALUES[prev] if v.startswith(partial)]
    if partial.startswith("-"):
        return [f for f in FLAGS if f.startswith(partial)]
    if not before and not partial.startswith(KIND_PREFIXES):
        sub = [s for s in SUBCOMMANDS if s.startswith(partial)]
    else:
        sub = []
    try:
        if prev in ("-n", "--namespace"):
            kube = _kube([*before[:-2], ""])
            return [n["metadata"]["name"] for n in kube.list_namespaces()
                    if n["metadata"]["name"].startswith(partial)]
        if prev == "--context":
            from .kubeclient import load

            contexts, _active = load().kube_config.list_kube_config_contexts(_option(words, "--kubeconfig"))
            return [c["name"] for c in contexts if c["name"].startswith(partial)]
        if prev in ("-c", "--container"):
            targets = [p for p in _positionals(before[:-1]) if p not in SUBCOMMANDS]
            if not targets:
                return []
            kind, _, name = targets[0].rpartition("/")
            if kind not in ("", "pod", "po", "pods"):
                return []
            kube = _kube(words)
            pod = kube.get_pod(kube.namespace, name)
            return [c["name"] for c in pod["spec"]["containers"] if c["name"].startswith(partial)]
        if prev in VALUE_FLAGS:
            return []
        if [p for p in _positionals(before) if p not in SUBCOMMANDS]:
            return []  # the target is given: the rest are ss words
        kube = _kube(words)
        if "/" in partial:
            kind = partial.split("/", 1)[0]
            kind = {"pods": "pod", "po": "pod", "deployment": "deploy", "service": "svc"}.get(kind, kind)
            if kind not in _LIST_PATHS:
                return []
            return [f"{partial.split('/', 1)[0]}/{n}" for n in _names(kube, kind)
                    if f"{partial.split('/', 1)[0]}/{n}".startswith(partial)]
        pods = [n for n in _names(kube, "pod") if n.startswith(partial)]
        return sub + pods + [p for p in KIND_PREFIXES if p.startswith(partial)]
    except Exception:  # no cluster, no permission: offer what we have
        if prev in VALUE_FLAGS:
            return []  # a namespace, context or container is wanted, never a TARGET prefix
        return sub + [p for p in KIND_PREFIXES if p.startswith(partial)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    for c in candidates(words):
        print(c)
    print(f":{NO_FILE_COMP}")
    return 0


def run() -> None:
    sys.exit(main())
