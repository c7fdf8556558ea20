"""scripts/setup installs everything the scripts, tests and benchmarks run (issue 10, part 1).

A fresh machine once failed the suite because the tests ran ``nft`` and nothing installed
nftables.  These tests read the code instead of trusting the machine:

- Python (tests/, bench/, agent/, plugin/): the argv head of every ``subprocess`` call and
  ``shutil.which`` name; calls through *command wrappers* — functions that splice a parameter
  into an argv after ``ip netns exec NAME`` or ``nsenter ...`` (``TestNamespace.exec("nft", ...)``),
  or that pass a parameter on as the whole argv — and through functions calling those.  A
  method name that is a wrapper in one class and not in another is followed only when the
  receiver is ``self`` or a local made from a known class.
- Shell (scripts/*, hack/local-cluster, .ci/run): every ``command -v NAME`` and ``have NAME``,
  and the Debian packages hack/local-cluster installs itself.
- Python imports: every third-party module is provided by a requirement of pyproject's
  dependencies or its ``plugin``/``test`` extras (what scripts/setup installs).

Each command must be in scripts/setup-packages (the map scripts/setup installs from).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
PACKAGE_MAP = REPO / "scripts" / "setup-packages"
PY_ROOTS = ("tests", "bench", "agent", "plugin")
# Calls resolve to definitions of the same group only (tests never call the plugin's Kube.exec
# on a namespace object, and the plugin runs no host commands through test helpers).
SCOPES = {"tests": "tests", "bench": "tests", "agent": "agent", "plugin": "plugin"}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
EXEC_PREFIXES = (("ip", "netns", "exec"), ("nsenter",))  # the command comes after these


def package_map() -> dict[str, str]:
    out = {}
    for line in PACKAGE_MAP.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words:
            assert len(words) == 2, f"{PACKAGE_MAP.name}: want COMMAND SOURCE: {line!r}"
            out[words[0]] = words[1]
    return out


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def python_files() -> list[Path]:
    work = REPO / "bench" / "work"  # git-ignored: the benches' venvs and scratch files, not this repository's code
    return sorted(p for root in PY_ROOTS for p in (REPO / root).rglob("*.py") if work not in p.parents)


def shell_scripts() -> list[Path]:
    """scripts/*, hack/* and .ci/run that are shell: *.sh or a sh/bash shebang."""
    out = []
    for path in [*(REPO / "scripts").iterdir(), *(REPO / "hack").iterdir(), REPO / ".ci" / "run"]:
        if path.is_file():
            head = path.read_bytes()[:64]
            if path.suffix == ".sh" or head.startswith((b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash")):
                out.append(path)
    return sorted(out)


# ---------------------------------------------------------------------------------------
# Python: what argv heads can be, statically
# ---------------------------------------------------------------------------------------
def module_constants(tree: ast.Module) -> dict[str, str]:
    """NAME = "cmd" | os.environ.get("X", "cmd") | shutil.which("cmd") at module level."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Call) and value.args:
                value = value.args[-1]
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out[node.targets[0].id] = value.value
    return out


def head_name(node: ast.AST, consts: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    return None  # sys.executable, str(path), a variable: not an installed command


def commands_of_argv(elts: list[ast.AST], consts: dict[str, str]) -> list[str]:
    """The command of an argv literal, and the one it runs through `ip netns exec NS` etc."""
    words = [head_name(e, consts) if not isinstance(e, ast.Starred) else None for e in elts]
    if not words or words[0] is None:
        return []
    out = [words[0]]
    for prefix in EXEC_PREFIXES:
        if tuple(words[:len(prefix)]) == prefix:
            rest = words[len(prefix):]
            if prefix == ("nsenter",):  # options, then `--`, then the command
                rest = rest[rest.index("--") + 1:] if "--" in rest else []
            else:
                rest = rest[1:]  # the namespace name
            if rest and rest[0]:
                out.append(rest[0])
    return out


def is_subprocess_call(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Attribute) and f.attr in SUBPROCESS_CALLS and isinstance(f.value, ast.Name)
            and f.value.id == "subprocess")


class Def:
    """A function or method: where it is and which parameter carries a command line."""

    def __init__(self, node: ast.FunctionDef, cls: str | None, path: Path, consts: dict[str, str]):
        self.node, self.cls, self.path, self.consts = node, cls, path, consts
        self.scope = scope_of(path)
        self.vararg = node.args.vararg.arg if node.args.vararg else None
        self.params = [a.arg for a in node.args.args]
        self.argv_param = 0
        self.wrapper: str | None = None  # "vararg" (a command line in *args) or "argv" (one list)

    def arg_index(self) -> int:
        """Where, in a call's positional arguments, the command line starts (vararg) or is (argv)."""
        skip = 1 if self.cls and self.params[:1] == ["self"] else 0
        if self.wrapper == "vararg":
            return len(self.params) - skip
        return self.argv_param - skip

    def command_args(self, call: ast.Call) -> list[ast.AST]:
        """The argv elements a call of this wrapper passes (empty when not literal)."""
        i = self.arg_index()
        if self.wrapper == "vararg":
            return call.args[i:]
        if len(call.args) > i and isinstance(call.args[i], (ast.List, ast.Tuple)):
            return call.args[i].elts
        return []


class Scan:
    def __init__(self) -> None:
        self.defs: list[Def] = []
        self.by_name: dict[str, list[Def]] = defaultdict(list)
        self.bases: dict[str, list[str]] = {}
        self.calls: list[tuple[Path, ast.Call, str | None, ast.FunctionDef | None, dict[str, str]]] = []
        self.found: dict[str, set[str]] = defaultdict(set)  # command -> where
        for path in python_files():
            tree = ast.parse(path.read_text(), str(path))
            consts = module_constants(tree)
            self._collect(tree, path, consts, None, None)

    def _collect(self, node, path, consts, cls, func) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                self.bases[child.name] = [b.id for b in child.bases if isinstance(b, ast.Name)]
                self._collect(child, path, consts, child.name, None)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                d = Def(child, cls, path, consts)
                self.defs.append(d)
                self.by_name[child.name].append(d)
                self._collect(child, path, consts, cls, child)
            else:
                if isinstance(child, ast.Call):
                    self.calls.append((path, child, cls, func, consts))
                self._collect(child, path, consts, cls, func)

    # -- wrappers ------------------------------------------------------------------------
    def _spliced(self, d: Def, elts: list[ast.AST]) -> str | None:
        """'vararg'/'argv' when the def's parameter is the command part of this argv."""
        for i, e in enumerate(elts):
            inner = e.value if isinstance(e, ast.Starred) else e
            if isinstance(inner, ast.Name) and inner.id in (d.vararg, *d.params):
                before = tuple(head_name(x, d.consts) for x in elts[:i])
                if any(before[:len(p)] == p for p in EXEC_PREFIXES) or i == 0:
                    if inner.id != d.vararg:
                        d.argv_param = d.params.index(inner.id)
                    return "vararg" if inner.id == d.vararg else "argv"
        return None

    def find_wrappers(self) -> None:
        for d in self.defs:
            for call in (n for n in ast.walk(d.node) if isinstance(n, ast.Call)):
                if is_subprocess_call(call) and call.args:
                    argv = call.args[0]
                    if isinstance(argv, (ast.List, ast.Tuple)):
                        d.wrapper = d.wrapper or self._spliced(d, argv.elts)
                    elif isinstance(argv, ast.Name) and argv.id in d.params and not d.wrapper:
                        d.wrapper, d.argv_param = "argv", d.params.index(argv.id)
        calls = {id(d): [n for n in ast.walk(d.node) if isinstance(n, ast.Call)] for d in self.defs}
        changed = True
        while changed:  # functions that hand their parameter to a wrapper are wrappers too
            changed = False
            for d in self.defs:
                if d.wrapper:
                    continue
                for call in calls[id(d)]:
                    target = self.resolve(call, d.cls, d.node, d.scope)
                    if target and target.wrapper and call.args:
                        i = target.arg_index()
                        kind = self._spliced(d, call.args[i:] if target.wrapper == "vararg" else call.args[i:i + 1])
                        if kind:
                            d.wrapper, changed = kind, True
                            break

    def _class_defs(self, cls: str, name: str, scope: str) -> list[Def]:
        seen, todo = [], [cls]
        while todo:
            c = todo.pop()
            hits = [d for d in self.by_name.get(name, ()) if d.cls == c and d.scope == scope]
            if hits:
                return hits
            seen.append(c)
            todo += [b for b in self.bases.get(c, []) if b not in seen]
        return []

    def resolve(self, call: ast.Call, cls: str | None, func: ast.FunctionDef | None, scope: str) -> Def | None:
        f = call.func
        if isinstance(f, ast.Name):
            hits = [d for d in self.by_name.get(f.id, ()) if d.cls is None and d.scope == scope]
            return hits[0] if len(hits) == 1 else None
        if not isinstance(f, ast.Attribute):
            return None
        owner = None
        if isinstance(f.value, ast.Name) and f.value.id == "self":
            owner = cls
        elif isinstance(f.value, ast.Name) and func is not None:
            owner = local_class(func, f.value.id)
        if owner:
            hits = self._class_defs(owner, f.attr, scope)
            return hits[0] if hits else None
        hits = [d for d in self.by_name.get(f.attr, ()) if d.cls is not None and d.scope == scope]
        wrappers = [d for d in hits if d.wrapper]
        return wrappers[0] if hits and len(wrappers) == len(hits) else None  # unambiguous only

    # -- commands ------------------------------------------------------------------------
    def commands(self) -> dict[str, set[str]]:
        if self.found:
            return self.found
        self.find_wrappers()
        for path, call, cls, func, consts in self.calls:
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            f = call.func
            if is_subprocess_call(call) and call.args and isinstance(call.args[0], (ast.List, ast.Tuple)):
                self._add(commands_of_argv(call.args[0].elts, consts), where)
            elif isinstance(f, ast.Attribute) and f.attr == "which" and call.args:
                self._add([head_name(call.args[0], consts)], where)
            else:
                target = self.resolve(call, cls, func, scope_of(path))
                if target is not None and target.wrapper:
                    self._add(commands_of_argv(target.command_args(call), consts), where)
        return self.found

    def _add(self, names, where: str) -> None:
        for name in names:
            if name and not name.startswith("-"):
                self.found[name].add(where)


def scope_of(path: Path) -> str:
    return SCOPES[path.relative_to(REPO).parts[0]]


@cache
def scan() -> dict[str, set[str]]:
    return Scan().commands()


def local_class(func: ast.FunctionDef, var: str) -> str | None:
    """The class of local VAR: `var = Cls(...)`, `with Cls(...) as var` or `var: Cls`."""
    for a in func.args.args:
        if a.arg == var and isinstance(a.annotation, ast.Name):
            return a.annotation.id
    for node in ast.walk(func):
        value = None
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == var for t in node.targets):
            value = node.value
        elif isinstance(node, ast.withitem) and isinstance(node.optional_vars, ast.Name) \
                and node.optional_vars.id == var:
            value = node.context_expr
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id[:1].isupper():
            return value.func.id
    return None


# ---------------------------------------------------------------------------------------
# shell
# ---------------------------------------------------------------------------------------
SHELL_CHECKS = re.compile(r"(?:command -v|\bhave)\s+(?:\"?\$\{?\w+\}?\"?|([A-Za-z0-9_.+-]+))")


def shell_commands() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in shell_scripts():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split(" #", 1)[0]
            if code.lstrip().startswith("#"):
                continue
            for m in SHELL_CHECKS.finditer(code):
                if m.group(1):
                    found[m.group(1)].add(f"{path.relative_to(REPO)}:{n}")
    return found


def local_cluster_packages() -> set[str]:
    text = (REPO / "hack" / "local-cluster").read_text()
    m = re.search(r"local pkgs=\(([^)]*)\)", text)
    assert m, "hack/local-cluster: no `local pkgs=(...)` in ensure_packages"
    return set(m.group(1).split())


def local_cluster_builds() -> set[str]:
    text = (REPO / "hack" / "local-cluster").read_text()
    m = re.search(r"^K8S_CMDS=\(([^)]*)\)", text, re.M)
    assert m, "hack/local-cluster: no K8S_CMDS=(...)"
    return set(m.group(1).split()) | {"etcd", "crictl", "go"}  # go: fetched when none is found


def entry_points() -> set[str]:
    return set(pyproject()["project"].get("scripts", {}))


# ---------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------
def test_the_scanner_sees_commands_behind_the_namespace_wrappers():
    """The regression this file exists for: `nft` and `ss` run through TestNamespace.exec/run."""
    found = scan()
    for name in ("ip", "ss", "prlimit", "docker", "kubectl"):
        assert name in found, sorted(found)
    if any("nft" in p.read_text() for p in (REPO / "tests" / "integration").glob("*.py")):
        assert "nft" in found, sorted(found)
    assert "apply" not in found, found.get("apply")  # Kube.run's first word is kubectl's, not a command


def test_every_command_the_python_code_runs_is_installed_by_setup():
    known = package_map()
    provided = set(known) | {Path(k).name for k in known} | entry_points()
    missing = {name: sorted(where) for name, where in scan().items() if name not in provided}
    assert not missing, (f"commands run by tests/bench/plugin/agent that {PACKAGE_MAP.relative_to(REPO)} "
                         f"does not list (add `COMMAND PACKAGE`): {missing}")


def test_every_command_the_scripts_check_for_is_installed_by_setup():
    known = package_map()
    missing = {name: sorted(where) for name, where in shell_commands().items() if name not in known}
    assert not missing, f"commands the shell scripts need that {PACKAGE_MAP.name} does not list: {missing}"


def test_setup_installs_what_the_local_cluster_would_install_itself():
    packages = set(package_map().values())
    assert local_cluster_packages() <= packages, local_cluster_packages() - packages


def test_local_cluster_sources_are_built_by_hack_local_cluster():
    bad = {c for c, src in package_map().items() if src == "@local-cluster" and c not in local_cluster_builds()}
    assert not bad, f"marked @local-cluster but hack/local-cluster does not build them: {bad}"


def test_the_map_names_real_debian_packages():
    if shutil.which("apt-cache") is None:
        pytest.skip("not a Debian system (no apt-cache)")
    pkgs = sorted({p for p in package_map().values() if not p.startswith("@")})
    proc = subprocess.run(["apt-cache", "show", "--no-all-versions", *pkgs], capture_output=True, text=True)
    shown = set(re.findall(r"^Package: (\S+)$", proc.stdout, re.M))
    assert set(pkgs) <= shown, f"not known to apt: {set(pkgs) - shown}"


def test_every_mapped_command_is_installed_here():
    """After scripts/setup (scripts/test runs it first) nothing in the map is missing."""
    missing = {}
    for what, src in package_map().items():
        if src.startswith("@"):
            continue
        ok = os.path.exists(what) if what.startswith("/") else shutil.which(what) is not None
        if not ok:
            missing[what] = src
    assert not missing, f"not installed (run scripts/setup, which installs them): {missing}"


# ---------------------------------------------------------------------------------------
# Python dependencies
# ---------------------------------------------------------------------------------------
def third_party_imports() -> dict[str, set[str]]:
    local = {p.stem for root in PY_ROOTS for p in (REPO / root).rglob("*.py")}
    local |= {p.name for root in PY_ROOTS for p in (REPO / root).rglob("*") if p.is_dir()}
    local |= {"sockdebug_agent", "sockdebug_plugin"}
    found: dict[str, set[str]] = defaultdict(set)
    for path in python_files():
        tree = ast.parse(path.read_text(), str(path))
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                    for h in t.handlers if h.type is not None and "ImportError" in ast.dump(h.type)
                    for s in t.body for n in ast.walk(s)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                    found[top].add(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def normalize(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def requirement_name(req: str) -> str:
    return normalize(re.match(r"[A-Za-z0-9._-]+", req).group(0))


def installed_with(names: set[str]) -> set[str]:
    """NAMES and everything pip installs with them (their requirements, transitively)."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_every_third_party_import_is_a_declared_requirement():
    project = pyproject()["project"]
    reqs = list(project.get("dependencies", []))
    for extra in ("plugin", "test"):
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    declared = installed_with({requirement_name(r) for r in reqs})
    by_module = metadata.packages_distributions()
    problems = {}
    for module, where in third_party_imports().items():
        dists = {normalize(d) for d in by_module.get(module, [])}
        if not dists:
            problems[module] = f"not installed (add it to pyproject's test extra; scripts/setup) {sorted(where)}"
        elif not dists & declared:
            problems[module] = f"from {sorted(dists)}, not declared in pyproject {sorted(where)}"
    assert not problems, problems
