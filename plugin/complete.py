"""``kubectl_complete-sockdebug``: shell completion through kubectl (>= 1.26).

kubectl runs this with the words typed after ``kubectl sockdebug`` (the last one
being the word under completion) and expects one candidate per line, then a
``:DIRECTIVE`` line (cobra's ShellCompDirective; 4 = no file completion).
Completion never fails loudly: without a cluster it just offers fewer candidates.

Names (pods, workloads, namespaces, containers) come from ``kubectl get``: kubectl
is what runs completion, so it is there, with the user's kubeconfig and auth plugins,
and it answers in a fraction of the Python client's import time.  Contexts are read
from the kubeconfig files themselves.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

from . import flags
from .choices import KIND_PREFIXES, KINDS, SUBCOMMANDS, output_names

NO_FILE_COMP = 4
VALUE_FLAGS = flags.value_flags()
# canonical TARGET kind (choices.KINDS) -> what kubectl calls it
_RESOURCES = {"pod": "pods", "deployments": "deployments", "statefulsets": "statefulsets",
              "daemonsets": "daemonsets", "replicasets": "replicasets", "jobs": "jobs", "service": "services",
              "node": "nodes"}
_TIMEOUT_S = 5


def command_of(words: Sequence[str]) -> flags.Command:
    """The command the words are for (``inspect`` unless the first word names another)."""
    return flags.COMMANDS[words[0]] if words and words[0] in SUBCOMMANDS else flags.INSPECT


def long_flags(cmd: flags.Command) -> list[str]:
    """Every long option of ``cmd`` (both spellings of a switch), then --help."""
    return [n for f in cmd.flags for n in (*f.names, *f.off) if n.startswith("--")] + ["--help"]


def fixed_values(cmd: flags.Command, name: Optional[str]) -> Optional[tuple[str, ...]]:
    """The choice set of option ``name`` of ``cmd``, if it has one (``-o``: its plain
    formats, then kubectl's ``NAME=`` templates)."""
    for f in cmd.flags:
        if name in f.names and f.choices:
            return tuple(output_names(f.choices)) if f.dest == "output" else f.choices
    return None


def _header(path: str) -> str:
    """A column header for a row path: its last name, upper case (``.processes[0].container``: CONTAINER)."""
    return path.rsplit(".", 1)[-1].split("[", 1)[0].upper() or "VALUE"


def output_values(cmd: flags.Command, partial: str) -> list[str]:
    """``-o`` values: the formats, and inside ``custom-columns=`` / ``jsonpath=`` the
    paths of the command's rows (output.row_paths)."""
    name, eq, spec = partial.partition("=")
    if not eq or name not in ("custom-columns", "jsonpath"):
        return [v for v in fixed_values(cmd, "-o") or () if v.startswith(partial)]
    from .output import document_paths, row_paths

    if name == "jsonpath":
        return [f"jsonpath={t}" for t in document_paths(cmd.name) if f"jsonpath={t}".startswith(partial)]
    done, comma, column = spec.rpartition(",")
    header, colon, path = column.partition(":")
    head = f"custom-columns={done}{comma}"
    if colon:
        return [f"{head}{header}:{p}" for p in row_paths(cmd.name) if p.startswith(path)]
    return [f"{head}{_header(p)}:{p}" for p in row_paths(cmd.name)
            if f"{_header(p)}:{p}".lower().startswith(column.lower())]


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


def _kubectl(words: Sequence[str], *args: str) -> Optional[list[str]]:
    """What ``kubectl ARGS`` prints, with the connection flags typed so far (None: no answer)."""
    from .kubectl import kubectl_words

    return kubectl_words(_option(words, "--kubeconfig"), _option(words, "--context"),
                         _option(words, "-n", "--namespace"), *args, timeout=_TIMEOUT_S)


def _names(words: Sequence[str], kind: str) -> Optional[list[str]]:
    return _kubectl(words, "get", _RESOURCES[kind], "-o", "custom-columns=:metadata.name", "--no-headers")


def _contexts(words: Sequence[str]) -> list[str]:
    """Context names in the kubeconfig files kubectl would read (no cluster needed)."""
    import os

    import yaml

    given = _option(words, "--kubeconfig")
    paths = [given] if given else (os.environ.get("KUBECONFIG", "").split(os.pathsep) if os.environ.get(
        "KUBECONFIG") else ["~/.kube/config"])
    names: list[str] = []
    for path in filter(None, paths):
        try:
            with open(os.path.expanduser(path)) as f:
                config = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except (OSError, yaml.YAMLError):
            continue
        names += [c["name"] for c in config.get("contexts") or [] if c.get("name") and c["name"] not in names]
    return names


def candidates(words: Sequence[str]) -> list[str]:
    """Completion candidates for the last word of ``words`` (the words after the plugin name)."""
    words = list(words) or [""]
    partial, before = words[-1], words[:-1]
    prev = before[-1] if before else None
    cmd = command_of(before)
    if prev in ("-o", "--output") and fixed_values(cmd, prev) is not None:
        return output_values(cmd, partial)
    fixed = fixed_values(cmd, prev)
    if fixed is not None:
        return [v for v in fixed if v.startswith(partial)]
    if prev == "--sort-by":
        from .output import row_paths

        return [p for p in row_paths(cmd.name) if p.startswith(partial)]
    if partial.startswith("-"):
        return [f for f in long_flags(cmd) if f.startswith(partial)]
    if not before and not partial.startswith(KIND_PREFIXES):
        sub = [s for s in SUBCOMMANDS if s.startswith(partial)]
    else:
        sub = []
    if prev in ("-n", "--namespace"):
        names = _kubectl([*before[:-2], ""], "get", "namespaces", "-o", "custom-columns=:metadata.name",
                         "--no-headers")
        return [n for n in names or [] if n.startswith(partial)]
    if prev == "--context":
        return [c for c in _contexts(words) if c.startswith(partial)]
    if prev in ("-c", "--container"):
        targets = [p for p in _positionals(before[:-1]) if p not in SUBCOMMANDS]
        kind, _, name = targets[0].rpartition("/") if targets else ("x", "", "")
        if kind not in ("", "pod", "po", "pods"):
            return []
        names = _kubectl(words, "get", "pod", name, "-o", "jsonpath={.spec.containers[*].name}")
        return [c for c in names or [] if c.startswith(partial)]
    if prev in VALUE_FLAGS:
        return []  # a value is wanted, never a TARGET
    if before and not cmd.args:
        return []  # agents, version: no TARGET
    if [p for p in _positionals(before) if p not in SUBCOMMANDS]:
        return []  # the target is given: the rest are ss words
    known = sub + [p for p in KIND_PREFIXES if p.startswith(partial)]
    word, slash, _ = partial.partition("/")
    kind = KINDS.get(word.lower()) if slash else "pod"
    names = _names(words, kind) if kind else []
    if names is None:  # no kubectl or no cluster: what completion knows
        return known
    if slash:
        return [f"{word}/{n}" for n in names if f"{word}/{n}".startswith(partial)]
    return sub + [n for n in names if n.startswith(partial)] + [p for p in KIND_PREFIXES if p.startswith(partial)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    for c in candidates(words):
        print(c)
    print(f":{NO_FILE_COMP}")
    return 0


def run() -> None:
    sys.exit(main())
