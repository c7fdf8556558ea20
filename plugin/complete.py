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

from . import flags
from .choices import KIND_PREFIXES, KINDS, SUBCOMMANDS

NO_FILE_COMP = 4
VALUE_FLAGS = flags.value_flags()
# canonical TARGET kind (choices.KINDS) -> the API path that lists its names
_LIST_PATHS = {"pod": "/api/v1/namespaces/{ns}/pods", "deployments": "/apis/apps/v1/namespaces/{ns}/deployments",
               "statefulsets": "/apis/apps/v1/namespaces/{ns}/statefulsets",
               "daemonsets": "/apis/apps/v1/namespaces/{ns}/daemonsets",
               "replicasets": "/apis/apps/v1/namespaces/{ns}/replicasets",
               "jobs": "/apis/batch/v1/namespaces/{ns}/jobs",
               "service": "/api/v1/namespaces/{ns}/services", "node": "/api/v1/nodes"}


def command_of(words: Sequence[str]) -> flags.Command:
    """The command the words are for (``inspect`` unless the first word names another)."""
    return flags.COMMANDS[words[0]] if words and words[0] in SUBCOMMANDS else flags.INSPECT


def long_flags(cmd: flags.Command) -> list[str]:
    """Every long option of ``cmd`` (both spellings of a switch), then --help."""
    return [n for f in cmd.flags for n in (*f.names, *f.off) if n.startswith("--")] + ["--help"]


def fixed_values(cmd: flags.Command, name: Optional[str]) -> Optional[tuple[str, ...]]:
    """The choice set of option ``name`` of ``cmd``, if it has one."""
    for f in cmd.flags:
        if name in f.names and f.choices:
            return f.choices
    return None


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
    from .kube import connect

    return connect(kubeconfig=_option(words, "--kubeconfig"), context=_option(words, "--context"),
                   namespace=_option(words, "-n", "--namespace"), request_timeout=5)


def _names(kube, kind: str) -> list[str]:
    return kube.list_names(_LIST_PATHS[kind], kube.namespace)


def candidates(words: Sequence[str]) -> list[str]:
    """Completion candidates for the last word of ``words`` (the words after the plugin name)."""
    words = list(words) or [""]
    partial, before = words[-1], words[:-1]
    prev = before[-1] if before else None
    cmd = command_of(before)
    fixed = fixed_values(cmd, prev)
    if fixed is not None:
        return [v for v in fixed if v.startswith(partial)]
    if partial.startswith("-"):
        return [f for f in long_flags(cmd) if f.startswith(partial)]
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
            word = partial.split("/", 1)[0]
            kind = KINDS.get(word.lower())
            if kind is None:
                return []
            return [f"{word}/{n}" for n in _names(kube, kind) if f"{word}/{n}".startswith(partial)]
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
