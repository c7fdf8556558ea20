"""What the destroy subscription needs on this kernel, found by running ``events`` (and the
closes it should see) as root without capabilities, as uid 65534, and in a user namespace.

On Linux 6.x the destroy groups are open to any uid (the kernel's sock_diag netlink is
created with NL_CFG_F_NONROOT_RECV) and every message carries tcp_info; what a missing
CAP_NET_ADMIN costs is a receive buffer capped by net.core.rmem_max, which the agent
says in a warning.  docs/schema.md (events, privileges) states these results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import as_nobody_python
from netns_fixture import TestNamespace
from sockdebug_agent.inspectors.events import DEFAULT_RCVBUF

pytestmark = pytest.mark.root

DRIVER = Path(__file__).parent / "helpers" / "events_driver.py"
DROP_ALL = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--inh-caps=-all",
          "--bounding-set=-all"]


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (creates network namespaces, switches users)"
    for tool in ("ip", "setpriv", "unshare"):
        if shutil.which(tool) is None:
            return f"needs `{tool}`"
    return None


@pytest.fixture
def ns():
    why = _why_not()
    if why:
        pytest.skip(why)
    ns = TestNamespace("sdtevp")
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="module")
def nobody_python() -> list[str]:
    """``env PYTHONPATH=... PYTHON`` that uid 65534 can run the agent with (faultkit's)."""
    if _why_not():
        pytest.skip(_why_not())
    command = as_nobody_python()
    assert command[-2:] == ["-m", "sockdebug_agent"]
    return command[:-2]


def run_driver(prefix: list[str], python: list[str]) -> list[dict]:
    """The driver (and so the agent: its sys.executable) under ``prefix``, with ``python``."""
    out = subprocess.run([*prefix, *python, str(DRIVER), "clean,udp"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    recs = [json.loads(line) for line in out.stdout.splitlines()]
    assert recs[0]["type"] == "hello" and recs[-1]["type"] == "end" and recs[-1]["exit_code"] == 0, recs
    return recs


def check_complete(recs: list[dict]) -> dict:
    """Every close seen, TCP ones with their final tcp_info figures; returns the hello."""
    events = [r for r in recs if r["type"] == "event"]
    assert sorted((e["netid"], e["close"]) for e in events) == [
        ("tcp", "closed"), ("tcp", "closed"), ("tcp", "unconnected"), ("udp", None), ("udp", None), ("udp", None)]
    assert all(e["bytes_acked"] is not None and e["segs_out"] is not None for e in events if e["netid"] == "tcp")
    assert not [r for r in recs if r["type"] == "error"]
    return recs[0]


def rcvbuf_warned(recs: list[dict]) -> bool:
    return any(r["type"] == "warning" and r["code"] == "events-rcvbuf-limited" for r in recs)


def capped() -> bool:
    """Whether SO_RCVBUF alone gets less than the agent asks for (the kernel grants up to
    net.core.rmem_max, doubled, and reports the doubled size)."""
    with open("/proc/sys/net/core/rmem_max") as f:
        return int(f.read()) < DEFAULT_RCVBUF


def test_root_with_every_capability_gets_the_whole_buffer(ns):
    recs = run_driver(["ip", "netns", "exec", ns.name], [sys.executable])
    assert check_complete(recs)["euid"] == 0
    assert not rcvbuf_warned(recs)  # SO_RCVBUFFORCE


def test_root_without_capabilities_sees_everything_with_a_capped_buffer(ns):
    recs = run_driver(["ip", "netns", "exec", ns.name, *DROP_ALL], [sys.executable])
    check_complete(recs)
    assert rcvbuf_warned(recs) == capped()


def test_another_uid_without_capabilities_sees_everything(ns, nobody_python):
    recs = run_driver(["ip", "netns", "exec", ns.name, *NOBODY], nobody_python)
    assert check_complete(recs)["euid"] == 65534
    assert rcvbuf_warned(recs) == capped()


def test_a_user_namespace_sees_its_own_network_namespace(nobody_python):
    """An unprivileged user's own user + network namespace (rootless containers): root in
    there, yet without any capability over the initial namespace."""
    if _why_not():
        pytest.skip(_why_not())
    probe = subprocess.run([*NOBODY, "unshare", "-U", "-r", "-n", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"unprivileged user namespaces are off here: {probe.stderr.decode().strip()}")
    recs = run_driver([*NOBODY, "unshare", "-U", "-r", "-n"], nobody_python)
    assert check_complete(recs)["euid"] == 0  # mapped from 65534
    assert rcvbuf_warned(recs) == capped()  # SO_RCVBUFFORCE checks the initial user namespace
