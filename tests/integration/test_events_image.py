"""``events`` in the agent image under a real Docker engine, as the plugin's profiles run it:
`restricted`-like (uid 65534, every capability dropped, the engine's default seccomp
profile, no privilege escalation) and `netadmin`-like (root with NET_ADMIN).  The close
happens inside the agent's own container (a ``docker exec`` of its Python), once the
agent has joined the destroy groups.  Images and containers come from test_image.py's
fixtures (built once per session by scripts/build-images)."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_image import containers, docker_engine, images  # noqa: F401  (pytest fixtures)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

# Wait until this network namespace has a sock_diag subscriber, then close one TCP socket.
CLOSE_ONE = """
import socket, time
def subscribers():
    rows = [line.split() for line in open('/proc/net/netlink').readlines()[1:]]
    return sum(1 for r in rows if r[1] == '4' and int(r[3], 16))
deadline = time.monotonic() + 30
while not subscribers() and time.monotonic() < deadline:
    time.sleep(0.05)
s = socket.socket()
s.bind(('127.0.0.1', 0))
print(s.getsockname()[1])
s.close()
"""


def events_in_a_container(images, containers, docker_args: tuple[str, ...]) -> tuple[list[dict], int]:  # noqa: F811
    name = containers.run_detached(images["agent"], "events", "--count", "1", "--tick", "0",
                                   docker_args=docker_args, role="events")
    closed = subprocess.run(["docker", "exec", name, "python3", "-c", CLOSE_ONE], capture_output=True, text=True,
                            timeout=60)
    # The agent is the container's init and ends at its first event (--count 1): the exec'd
    # Python may be killed with the container (137) once it has printed its port.
    assert closed.returncode in (0, 137) and closed.stdout.strip().isdigit(), (closed.returncode, closed.stderr)
    status = subprocess.run(["docker", "wait", name], capture_output=True, text=True, timeout=60)
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=60)
    records = [json.loads(line) for line in logs.stdout.splitlines()]
    assert records[0]["type"] == "hello" and records[-1]["type"] == "end", logs.stdout[-2000:] + logs.stderr
    assert int(status.stdout) == records[-1]["exit_code"] == 0, logs.stderr
    (event,) = [r for r in records if r["type"] == "event"]
    assert (event["netid"], event["local_address"], event["local_port"], event["close"]) == (
        "tcp", "127.0.0.1", int(closed.stdout), "unconnected")
    assert event["bytes_acked"] == 0 and event["segs_out"] == 0  # the final tcp_info came with it
    return records, records[0]["euid"]


def warned(records: list[dict]) -> set[str]:
    return {r["code"] for r in records if r["type"] == "warning"}


def test_restricted_profile_follows_events(images, containers):  # noqa: F811 (fixtures)
    records, euid = events_in_a_container(images, containers, (
        "--user", "65534:65534", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"))
    assert euid == 65534
    with open("/proc/sys/net/core/rmem_max") as f:
        capped = int(f.read()) < 8 << 20
    assert ("events-rcvbuf-limited" in warned(records)) == capped


def test_netadmin_profile_gets_the_whole_buffer(images, containers):  # noqa: F811 (fixtures)
    records, euid = events_in_a_container(images, containers, ("--user", "0", "--cap-add", "NET_ADMIN"))
    assert euid == 0 and "events-rcvbuf-limited" not in warned(records)
