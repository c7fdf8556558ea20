"""``fwmark`` and ``cgroup`` conditions: the agent and ss select the same sockets.

The test makes a network namespace and a cgroup v2 directory of its own, and runs
``helpers/marked_sockets.py`` twice in the namespace: once inside the cgroup (role
``in``) and once outside (``out``), each with sockets marked with SO_MARK.  ss runs
through ``nsenter --net`` (``ip netns exec`` remounts /sys, and ss would then find no
cgroup2 mount); the agent enters with ``--netns``.  Both are removed afterwards.
Needs root (SO_MARK, cgroups, namespaces).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers.ss_text import agent_row, parse, snapshot
from netns_fixture import TestNamespace

pytestmark = pytest.mark.root

HELPER = Path(__file__).parent / "helpers" / "marked_sockets.py"
AGENT = [sys.executable, "-m", "sockdebug_agent"]


def cgroup2_mount() -> str | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return left.split(" ")[4]
    return None


class MarkedNamespace(TestNamespace):
    def __init__(self, cgroup_root: str) -> None:
        super().__init__("sdq")
        self.cgroup_name = self.name  # a directory of the cgroup2 mount, named like the namespace
        self.cgroup = os.path.join(cgroup_root, self.cgroup_name)
        os.mkdir(self.cgroup)
        self.info: dict[str, dict] = {}

    def start(self) -> None:
        enter_in_cgroup = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && n="$1" && shift && exec nsenter --net="$n" "$@"',
                           self.cgroup, f"/run/netns/{self.name}"]
        self.info["in"] = self.spawn([sys.executable, str(HELPER), "in"], enter=enter_in_cgroup)
        self.info["out"] = self.spawn([sys.executable, str(HELPER), "out"])

    def ss(self, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, "nsenter", f"--net=/run/netns/{self.name}", "ss", *args],
                              capture_output=True, text=True, timeout=60)

    def close(self) -> None:
        super().close()  # the helpers are killed and reaped first: the cgroup is then empty
        os.rmdir(self.cgroup)


@pytest.fixture(scope="module")
def marked_ns():
    if os.geteuid() != 0:
        pytest.skip("needs root (SO_MARK, cgroups, network namespaces)")
    root = cgroup2_mount()
    if root is None:
        pytest.skip("no cgroup2 filesystem is mounted")
    for tool in ("ip", "ss", "nsenter", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs `{tool}`")
    ns = MarkedNamespace(root)
    try:
        ns.start()
        yield ns
    finally:
        ns.close()


def _agent(ns: MarkedNamespace, *args: str, prefix: tuple[str, ...] = ()):
    import json

    proc = subprocess.run([*prefix, *AGENT, "--netns", ns.name, "sockets", *args], capture_output=True, text=True,
                          timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, [json.loads(line) for line in proc.stdout.splitlines()]


SOME, NONE = "some", "none"
CASES = [
    ("-tan", "fwmark = 0x2a", SOME), ("-tan", "fwmark 0x2a", SOME), ("-tan", "fwmark == 42", SOME),
    ("-tan", "fwmark eq 052", SOME), ("-tan", "fwmark != 0x2a", SOME), ("-tan", "fwmark neq 0x2a", SOME),
    ("-tan", "fwmark = 0", SOME), ("-tan", "fwmark 0x20/0xf0", SOME), ("-tan", "fwmark 0x2a/0xff", SOME),
    ("-tan", "fwmark 0xff00/0xff00", SOME), ("-tan", "fwmark 0x2b", SOME), ("-tan", "fwmark 0x7", SOME),
    ("-tan", "fwmark 0x9", SOME), ("-tan", "state fin-wait-2 fwmark 0x9", SOME), ("-tan", "fwmark 0x99", NONE),
    ("-tan", "fwmark 0x2aZZ", SOME),  # sscanf %i: trailing junk ignored
    ("-tan", "not fwmark 0x2a and not fwmark = 0", SOME), ("-uan", "fwmark 0x5", SOME), ("-xan", "fwmark = 0", SOME),
    ("-xan", "fwmark = 0x2a", NONE), ("-an", "fwmark 0x2a or fwmark 0x5", SOME),
    ("-tan", "cgroup /{cg}", SOME), ("-tan", "cgroup {cg}", SOME), ("-tan", "cgroup = /{cg}", SOME),
    ("-tan", "cgroup {root}/{cg}", SOME), ("-tan", "cgroup != /{cg}", SOME), ("-uan", "cgroup /{cg}", SOME),
    ("-xan", "cgroup /{cg}", NONE), ("-tan", "cgroup /{cg} and fwmark 0x2a", SOME),
    ("-tan", "cgroup /{cg} or fwmark 0x7", SOME), ("-6an", "cgroup /{cg}", SOME),
]


def _words(ns: MarkedNamespace, words: str) -> list[str]:
    return words.replace("{cg}", ns.cgroup_name).replace("{root}", os.path.dirname(ns.cgroup)).split()


def _keys(rows) -> Counter:
    return Counter(r.key for r in rows)


@pytest.mark.parametrize("flags, words, expected", CASES, ids=[f"{f} {w}" for f, w, _ in CASES])
def test_same_sockets_as_ss(marked_ns, flags, words, expected):
    argv = _words(marked_ns, words)

    def run_ss():
        proc = marked_ns.ss(flags + "H", *argv)
        assert proc.returncode == 0 and "cgroup" not in proc.stderr, proc.stderr
        return parse(proc.stdout, {"-tan": "tcp", "-uan": "udp", "-6an": None}.get(flags))

    rows, (proc, records) = snapshot(run_ss, lambda: _agent(marked_ns, flags, *argv))
    assert proc.returncode == 0, proc.stderr
    sockets = [r for r in records if r["type"] == "socket"]
    want, got = _keys(rows), _keys(agent_row(r) for r in sockets)
    assert got == want, f"only ss: {sorted(map(str, want - got))}\nonly agent: {sorted(map(str, got - want))}"
    assert (len(want) > 0) == (expected == SOME), f"ss selected {len(want)} sockets"
    assert not any("extended" in r for r in sockets)  # read for the filter, not shown without -e


def test_marks_and_cgroups_are_what_the_helpers_set(marked_ns):
    """The records carry the kernel's mark and cgroup id (the cgroup directory's inode)."""
    proc, records = _agent(marked_ns, "-tle")
    assert proc.returncode == 0, proc.stderr
    by_port = {r["local_port"]: r["extended"] for r in records if r["type"] == "socket"}
    cgroup_id = os.stat(marked_ns.cgroup).st_ino
    for role, info in marked_ns.info.items():
        ports = info["ports"]
        assert by_port[ports["mark_2a"]]["fwmark"] == 0x2A and by_port[ports["plain"]]["fwmark"] == 0
        assert by_port[ports["v6_mark_2b"]]["fwmark"] == 0x2B
        assert (by_port[ports["plain"]]["cgroup_id"] == cgroup_id) == (role == "in")


def test_fwmark_without_cap_net_admin(marked_ns):
    """The kernel sends marks only to CAP_NET_ADMIN: ss's bytecode is then refused (EPERM)
    and it reads /proc, where every mark is 0; the agent sees 0 too, and says why."""
    no_net_admin = ("setpriv", "--bounding-set", "-net_admin")
    for words, expected in ((["fwmark", "0x2a"], NONE), (["fwmark", "=", "0"], SOME)):
        ss = marked_ns.ss("-tanlH", *words, prefix=no_net_admin)
        assert ss.returncode == 0 and "Operation not permitted" in ss.stderr
        proc, records = _agent(marked_ns, "-tanl", *words, prefix=no_net_admin)
        assert proc.returncode == 0
        (warning,) = [r for r in records if r["type"] == "warning"]
        assert warning["code"] == "fwmark-unavailable" and "CAP_NET_ADMIN" in warning["message"]
        got = Counter(agent_row(r).key for r in records if r["type"] == "socket")
        assert got == _keys(parse(ss.stdout, "tcp"))
        assert (len(got) > 0) == (expected == SOME)


@pytest.mark.parametrize("words, offending", [
    (["cgroup", "/sdq-no-such-cgroup"], "/sdq-no-such-cgroup"),
    (["fwmark", "junk"], "junk"),
    (["fwmark", "0x1/"], "0x1/"),
    (["fwmark", "\u0661"], "\u0661"),  # an Arabic-Indic digit: sscanf reads ASCII digits only
    (["cgroup"], "cgroup"),
])
def test_invalid_marks_and_cgroups(marked_ns, words, offending):
    assert marked_ns.ss("-tanH", *words).returncode != 0
    proc, records = _agent(marked_ns, "-tan", *words)
    assert proc.returncode == 2, proc.stderr
    (error,) = [r for r in records if r["type"] == "error"]
    assert error["code"] == "usage" and offending in error["message"]
