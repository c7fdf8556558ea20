"""The real agent given hostile paths, values and environments: namespace paths that are
not network namespaces, bad numbers, /proc hidden (hidepid) or absent, netlink denied
(an LD_PRELOAD shim compiled here), unix socket names built to fool /proc parsers, and
an interface whose name is not UTF-8."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml
from faultkit import HOSTILE, NOBODY, build_netlink_shim, needs, run, workdir
from netns_fixture import TestNamespace

pytestmark = pytest.mark.root
PRIVATE_MOUNTS = ("unshare", "-m", "--propagation", "private")


# --- namespace paths and numbers -----------------------------------------------------------

@pytest.fixture(scope="module")
def odd_paths():
    with workdir() as d:
        os.mkfifo(d / "fifo")
        (d / "file").write_text("not a namespace\n")
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(d / "sock"))
        try:
            yield d
        finally:
            server.close()


@needs("ip")
@pytest.mark.parametrize("name, says", [
    ("fifo", "is a FIFO, not a network namespace"),
    ("file", "is a regular file, not a network namespace"),
    (".", "is a directory, not a network namespace"),
    ("sock", "is a unix socket or device"),
    ("file/below", "a part of it is not a directory"),
    ("nosuch", "no network namespace at"),
    ("/proc/self/ns/pid", "is a PID namespace, not a network one"),
    ("/proc/self/ns/user", "is a user namespace, not a network one"),
])
def test_namespace_paths_that_are_not_network_namespaces(odd_paths, name, says):
    path = name if name.startswith("/") else str(odd_paths / name)
    r = run("--netns", path, "sockets", timeout=30)  # a FIFO opened blocking would hang here
    assert r.returncode == 6 and r.error["code"] == "namespace"
    assert says in r.error["message"] and r.error["hint"]
    assert says in r.stderr and "hint: " in r.stderr


@needs("ip")
def test_a_path_too_long_is_named_abbreviated():
    path = "/" + "n" * 5000
    r = run("--netns", path, "sockets")
    assert r.returncode == 6 and r.error["code"] == "namespace"
    message = r.error["message"]
    assert "the path is too long" in message and "characters" in message and len(message) < 300
    assert len(r.stderr) < 600


@pytest.mark.parametrize("argv", [
    ["serve", "--idle-timeout", "nan"], ["serve", "--idle-timeout", "inf"], ["serve", "--idle-timeout", "-1"],
    ["serve", "--idle-timeout", "0"], ["serve", "--idle-timeout", "1e999"], ["serve", "--idle-timeout", "1_0"],
    ["serve", "--idle-timeout", "\u0665"], ["--target-pid", "\u0663", "sockets"], ["--target-pid", "0", "sockets"],
    ["--target-pid", "99999999999", "sockets"], ["--target-pid", " 1", "sockets"], ["--target-pid", "+1", "sockets"],
])
def test_numbers_are_ascii_finite_and_in_range(argv):
    r = run(*argv)
    assert r.returncode == 2 and r.error["code"] == "usage"
    assert "usage:" in r.stderr and "--" in r.error["message"]


# --- /proc hidden or absent ------------------------------------------------------------

def _hidepid(mode: str) -> tuple[str, ...]:
    return (*PRIVATE_MOUNTS, "sh", "-c", f'mount -t proc -o hidepid={mode} proc /proc && exec "$@"', "sh")


NO_PROC = (*PRIVATE_MOUNTS, "sh", "-c", 'umount -l /proc && exec "$@"', "sh")


@needs("unshare", "setpriv", "mount")
def test_hidepid_hides_owners_and_says_so():
    r = run("sockets", "-xp", prefix=(*_hidepid("2"), *NOBODY))
    assert r.returncode == 0
    (warning,) = [w for w in r.of_type("warning") if w["code"] == "processes-hidden"]
    assert "hidepid=invisible" in warning["message"] and "uid 65534" in warning["message"]
    limits = run("limits", "--all-processes", prefix=(*_hidepid("invisible"), *NOBODY))
    assert "processes-hidden" in limits.codes() and limits.returncode == 0
    # root may ptrace every process: hidepid hides nothing from it, and nothing is said
    assert "processes-hidden" not in run("sockets", "-xp", prefix=_hidepid("2")).codes()


@needs("unshare", "mount")
def test_without_proc_every_command_is_framed_and_says_what_is_missing():
    sockets = run("sockets", "-tp", prefix=NO_PROC)
    assert sockets.returncode == 0 and "processes-hidden" in sockets.codes()
    assert "not mounted" in sockets.of_type("warning")[0]["message"]
    limits = run("limits", prefix=NO_PROC)
    assert limits.returncode == 6 and limits.error["code"] == "kernel" and "/proc is not mounted" in limits.stderr
    triage = run("triage", prefix=NO_PROC)
    assert triage.returncode == 0 and {"proc-unavailable", "processes-hidden"} <= set(triage.codes())
    assert triage.of_type("summary") and triage.of_type("limits")
    summary = run("summary", prefix=NO_PROC)
    assert summary.returncode == 0 and "proc-unavailable" in summary.codes()
    # without netlink as well, the raw table (no raw_diag here) is said to be missing, not fatal
    raw = run("sockets", "-w", prefix=NO_PROC)
    assert raw.returncode == 0 and "proc-unavailable" in raw.codes()


# --- netlink denied, hostile unix names ----------------------------------------------------

@pytest.fixture(scope="module")
def hostile_ns():
    with workdir() as d:
        shim = build_netlink_shim(d)
        ns = TestNamespace("sdf")
        try:
            with open("/proc/net/unix", "rb") as f:  # the pointer style of this kernel's rows
                f.readline()
                pointer = f.readline().split(b":")[0]
            style = b"0" * len(pointer) if not pointer.strip(b"0") else b"%0*x" % (len(pointer), 0x5DF0C0DE)
            forged = style + b": 00000002 00000000 00010000 0001 01 999999 /forged"
            ns.info = ns.spawn([sys.executable, str(HOSTILE), "unix", str(d), forged.hex()])
            ns.spawn([sys.executable, str(HOSTILE), "many", "8080", "20"])
            ns.shim = shim
            yield ns
        finally:
            ns.close()


def _shimmed(errno_value: int = 13) -> dict:
    return {"LD_PRELOAD": "", "SOCKDEBUG_TEST_NETLINK_ERRNO": str(errno_value)}


@needs("ip", "gcc")
@pytest.mark.parametrize("errno_value", [13, 1], ids=["EACCES", "EPERM"])
def test_netlink_denied_falls_back_to_proc(hostile_ns, errno_value):
    env = {**_shimmed(errno_value), "LD_PRELOAD": str(hostile_ns.shim)}
    denied = run("--netns", hostile_ns.name, "sockets", "-tuxap", env=env)
    normal = run("--netns", hostile_ns.name, "sockets", "-tuxap")
    assert denied.returncode == normal.returncode == 0
    assert {"netlink-unavailable", "proc-fallback"} <= set(denied.codes())
    assert "netlink-unavailable" not in normal.codes()

    def key(s):
        return (s["netid"], s["state"], s["local_address"], s["local_port"], s["inode"],
                tuple(p["pid"] for p in s.get("processes", [])))
    # /proc also lists embryonic unix server ends (inode 0), which unix_diag leaves out
    assert sorted(key(s) for s in denied.of_type("socket") if s["inode"]) == sorted(map(key, normal.of_type("socket")))
    by_inode = {s["inode"]: s["local_address"] for s in denied.of_type("socket")}
    for role, inode in hostile_ns.info["inodes"].items():
        assert by_inode[inode] == {s["inode"]: s["local_address"] for s in normal.of_type("socket")}[inode], role
    assert by_inode[hostile_ns.info["inodes"]["not-utf8"]] == "@sdf-\\xff\\xfe-name"
    assert 999999 not in by_inode and "unix-names-ambiguous" not in denied.codes()

    routes = run("--netns", hostile_ns.name, "routes", env=env)
    assert routes.returncode == 6 and routes.error["code"] == "kernel" and "NETLINK_ROUTE" in routes.error["message"]
    triage = run("--netns", hostile_ns.name, "triage", env=env)
    assert triage.returncode == 0 and "rtnetlink-unavailable" in triage.codes()


@needs("ip", "ss")
def test_the_forged_row_is_in_the_proc_bytes_and_not_a_socket(hostile_ns):
    """The oracle: the kernel over netlink, read by ss; the bytes a line-by-line /proc
    parser sees hold a row for inode 999999 that no socket has."""
    ss = subprocess.run(["ip", "netns", "exec", hostile_ns.name, "ss", "-xaH"], capture_output=True, check=True,
                        timeout=60).stdout
    rows = [line for line in ss.split(b"\n") if line.startswith((b"u_str ", b"u_dgr ", b"u_seq "))]
    agent = run("--netns", hostile_ns.name, "sockets", "-xa").of_type("socket")
    assert len(rows) == len(agent) == len(hostile_ns.info["inodes"])  # no socket 999999 in either
    assert b"sdf-\xff\xfe-name" in ss and b"/forged" in ss  # ss shows the name's bytes raw
    with open(f"/proc/{hostile_ns.info['pid']}/net/unix", "rb") as f:
        assert b" 999999 /forged\n" in f.read()


# --- a non-UTF-8 interface name ------------------------------------------------------------

@needs("ip")
def test_an_interface_name_that_is_not_utf8_is_escaped_everywhere():
    ns = TestNamespace("sdf")
    try:
        ns.ip("link", "add", "sdfpeer0", "type", "veth", "peer", "name", "sdftmp0")
        # ip takes the name as bytes; subprocess passes \udcff through os.fsencode as byte 0xff
        ns.ip("link", "set", "sdftmp0", "name", os.fsdecode(b"\xffsdf0"))
        ns.ip("link", "set", os.fsdecode(b"\xffsdf0"), "up")
        ns.ip("addr", "add", "10.77.0.1/24", "dev", os.fsdecode(b"\xffsdf0"))
        info = ns.spawn([sys.executable, str(HOSTILE), "bound", b"\xffsdf0".hex(), "7777"])
        want = "\\xffsdf0"
        sockets = run("--netns", ns.name, "sockets", "-tl")
        (sock,) = [s for s in sockets.of_type("socket") if s["inode"] == info["inode"]]
        assert sock["interface"] == want
        names = {i["name"] for i in run("--netns", ns.name, "interfaces").of_type("interface")}
        assert want in names
        assert want in {r["dev"] for r in run("--netns", ns.name, "routes").of_type("route")}
        # strict UTF-8 everywhere, so a reader's YAML (the plugin's -o yaml) takes every record
        for r in sockets.records:
            json.dumps(r, ensure_ascii=False).encode("utf-8")
            yaml.safe_dump(r, allow_unicode=True)
    finally:
        ns.close()
