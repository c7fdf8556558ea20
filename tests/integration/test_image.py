"""The agent image in a real Docker engine (issue 4).

A target container (sockdebug-testapp, uid 1000) listens on 127.0.0.1:8080 and
0.0.0.0:9090 and holds one connection to its own :9090.  The agent image runs
with --network/--pid container:<target>, the namespaces an ephemeral container
with targetContainerName gets, and the records must show what `ss -tap` would.

The images are built once per session by scripts/build-images (offline: Debian
base via mmdebstrap, host-built wheels); SOCKDEBUG_IMAGES_PREBUILT=1 skips that
when `make images` already ran.  Every container is named, labelled
sockdebug.test=image and removed in a finalizer, whatever happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

# The first test also builds the images (about a minute from nothing).
pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
BUILD_IMAGES = ROOT / "scripts" / "build-images"
LABEL = "sockdebug.test=image"
TARGET_ARGS = ["--listen", "127.0.0.1:8080", "--listen", "0.0.0.0:9090", "--connect", "127.0.0.1:9090"]
AGENT_TIMEOUT = 60


def _docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def _name(role: str) -> str:
    return f"sockdebug-it-{role}-{uuid.uuid4().hex[:8]}"


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def _sockets(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "socket"]


def _find(sockets: list[dict], state: str, addr: str, port: int, peer_port: int | None = None) -> dict:
    for s in sockets:
        if (s["netid"], s["state"], s["local_address"], s["local_port"]) == ("tcp", state, addr, port) and (
            peer_port is None or s["peer_port"] == peer_port
        ):
            return s
    seen = [(s["netid"], s["state"], s["local_address"], s["local_port"], s["peer_port"]) for s in sockets]
    raise AssertionError(f"no tcp {state} {addr}:{port} (peer port {peer_port}) among {seen}")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI (scripts/ensure-docker installs docker.io and starts dockerd)")
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("docker info timed out: no Docker engine answers")
    if info.returncode != 0 or not info.stdout.strip():
        pytest.skip(f"no Docker engine answers (docker info: {info.stderr.strip()[:200]})")


@pytest.fixture(scope="session")
def images(docker_engine: None) -> dict[str, str]:
    version = subprocess.run(
        [str(BUILD_IMAGES), "--print-version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tags = {
        "agent": os.environ.get("SOCKDEBUG_IMAGE", f"sockdebug-agent:{version}"),
        "testapp": os.environ.get("SOCKDEBUG_TESTAPP_IMAGE", f"sockdebug-testapp:{version}"),
        "version": version,
    }
    if os.environ.get("SOCKDEBUG_IMAGES_PREBUILT") != "1":
        build = subprocess.run([str(BUILD_IMAGES), "agent", "testapp"], capture_output=True, text=True, timeout=1500)
        assert build.returncode == 0, f"scripts/build-images failed:\n{build.stderr[-4000:]}"
    for tag in (tags["agent"], tags["testapp"]):
        assert _docker("image", "inspect", tag, check=False).returncode == 0, f"{tag} was not built"
    return tags


class Containers:
    """Names of the containers a test started; all removed at teardown."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def run_detached(self, image: str, *args: str, docker_args: tuple[str, ...] = (), role: str = "c") -> str:
        name = _name(role)
        self.names.append(name)
        _docker("run", "-d", "--name", name, "--label", LABEL, *docker_args, image, *args)
        return name

    def run(
        self,
        image: str,
        *args: str,
        docker_args: tuple[str, ...] = (),
        role: str = "agent",
        keep: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion in the foreground; removed afterwards unless keep."""
        name = _name(role)
        self.names.append(name)
        rm = () if keep else ("--rm",)
        try:
            return _docker(
                "run",
                *rm,
                "--name",
                name,
                "--label",
                LABEL,
                *docker_args,
                image,
                *args,
                timeout=AGENT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            _docker("rm", "-f", name, check=False)
            raise

    def remove_all(self) -> None:
        if self.names:
            _docker("rm", "-f", "-v", *self.names, check=False, timeout=120)
            self.names.clear()


@pytest.fixture(scope="module")
def module_containers(docker_engine: None):
    c = Containers()
    try:
        yield c
    finally:
        c.remove_all()


@pytest.fixture
def containers(docker_engine: None):
    c = Containers()
    try:
        yield c
    finally:
        c.remove_all()


@pytest.fixture(scope="module")
def target(images: dict[str, str], module_containers: Containers) -> dict:
    """The testapp container, once its sockets are all up ({"type": "ready"} line)."""
    name = module_containers.run_detached(images["testapp"], *TARGET_ARGS, role="target")
    deadline = time.monotonic() + 30
    while True:
        logs = _docker("logs", name, check=False)
        ready = [json.loads(line) for line in logs.stdout.splitlines() if line.startswith('{"type": "ready"')]
        if ready:
            break
        state = _docker("inspect", "-f", "{{.State.Status}}", name, check=False).stdout.strip()
        if state != "running" or time.monotonic() > deadline:
            pytest.fail(f"target {name} not ready ({state}): {logs.stdout[-1000:]} {logs.stderr[-1000:]}")
        time.sleep(0.2)
    info = ready[0]
    info["name"] = name
    info["client_port"] = int(info["connect"][0]["local"].rsplit(":", 1)[1])
    info["host_pid"] = int(_docker("inspect", "-f", "{{.State.Pid}}", name).stdout)
    return info


def _namespaces(target: dict) -> tuple[str, ...]:
    return ("--network", f"container:{target['name']}", "--pid", f"container:{target['name']}")


def _assert_target_sockets(sockets: list[dict], target: dict) -> dict[str, dict]:
    found = {
        "lo_listener": _find(sockets, "LISTEN", "127.0.0.1", 8080),
        "any_listener": _find(sockets, "LISTEN", "0.0.0.0", 9090),
        "client": _find(sockets, "ESTAB", "127.0.0.1", target["client_port"], peer_port=9090),
        "server": _find(sockets, "ESTAB", "127.0.0.1", 9090, peer_port=target["client_port"]),
    }
    assert found["client"]["peer_address"] == "127.0.0.1"
    for s in found.values():
        assert s["uid"] == 1000, s
    return found


def test_image_basics(images: dict[str, str], containers: Containers) -> None:
    """--version matches the package, OCI labels, size target, no shell inside."""
    out = containers.run(images["agent"], "--version", docker_args=("--network", "none"))
    assert out.returncode == 0, out.stderr
    assert images["version"] in out.stdout

    inspect = json.loads(_docker("image", "inspect", images["agent"]).stdout)[0]
    labels = inspect["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == images["version"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert inspect["Config"]["Entrypoint"] == ["/usr/local/bin/sockdebug-agent"]
    assert inspect["Size"] < 100_000_000, f"agent image is {inspect['Size'] / 1e6:.1f} MB"

    # Only the agent and psutil: not the plugin, typer or the Kubernetes client.
    probe = (
        "import importlib.util as u; print([m for m in ('sockdebug_agent', 'psutil', 'sockdebug_plugin', "
        "'typer', 'kubernetes', 'yaml') if u.find_spec(m)])"
    )
    r = containers.run(images["agent"], "-I", "-c", probe, docker_args=("--network", "none", "--entrypoint", "python3"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['sockdebug_agent', 'psutil']"

    for shell in ("/bin/sh", "/bin/bash", "/usr/bin/apt-get", "/usr/bin/dpkg"):
        r = containers.run(images["agent"], docker_args=("--network", "none", "--entrypoint", shell))
        assert r.returncode != 0, f"{shell} exists in the agent image"


def test_attribution_with_sys_ptrace(images: dict[str, str], target: dict, containers: Containers) -> None:
    r = containers.run(
        images["agent"],
        "sockets",
        "-tap",
        docker_args=(*_namespaces(target), "--cap-add", "SYS_PTRACE"),
    )
    assert r.returncode == 0, r.stderr
    records = _records(r.stdout)
    assert not [w for w in records if w["type"] == "warning" and w.get("code") == "process-attribution-denied"]
    found = _assert_target_sockets(_sockets(records), target)
    for what, s in found.items():
        owners = {(p["pid"], p["comm"]) for p in s.get("processes") or []}
        # The testapp is PID 1 of its PID namespace, which the agent shares.
        assert owners == {(target["pid"], "python3")}, (what, s)


def test_no_ptrace_other_uid(images: dict[str, str], target: dict, containers: Containers) -> None:
    r = containers.run(
        images["agent"],
        "sockets",
        "-tap",
        docker_args=(*_namespaces(target), "--cap-drop", "ALL", "--user", "2000:2000"),
    )
    assert r.returncode == 0, r.stderr
    records = _records(r.stdout)
    found = _assert_target_sockets(_sockets(records), target)
    for what, s in found.items():
        assert not s.get("processes"), (what, s)
    warnings = [w for w in records if w["type"] == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["code"] == "process-attribution-denied"
    assert "CAP_SYS_PTRACE" in warnings[0]["message"]


def test_same_uid_needs_no_capability(images: dict[str, str], target: dict, containers: Containers) -> None:
    """Same uid as the target: owners are attributed with every capability dropped."""
    r = containers.run(
        images["agent"],
        "sockets",
        "-tlp",
        docker_args=(*_namespaces(target), "--cap-drop", "ALL", "--user", f"{target['uid']}:{target['uid']}"),
    )
    assert r.returncode == 0, r.stderr
    records = _records(r.stdout)
    assert not [w for w in records if w["type"] == "warning"]
    s = _find(_sockets(records), "LISTEN", "127.0.0.1", 8080)
    assert {(p["pid"], p["comm"]) for p in s["processes"]} == {(target["pid"], "python3")}


def test_read_only_rootfs_json_lines(images: dict[str, str], target: dict, containers: Containers) -> None:
    r = containers.run(
        images["agent"],
        "sockets",
        "-tulp",
        docker_args=(*_namespaces(target), "--read-only", "--cap-add", "SYS_PTRACE"),
        keep=True,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines, "no output"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(rec, dict) and "type" in rec for rec in records)
    assert records[0]["type"] == "hello"
    assert records[-1]["type"] == "end"
    assert records[-1]["exit_code"] == 0
    assert "Traceback" not in r.stderr, r.stderr
    _find(_sockets(records), "LISTEN", "127.0.0.1", 8080)
    # Nothing was (or tried to be) written: every module is precompiled.
    name = containers.names[-1]
    assert _docker("diff", name).stdout.strip() == ""


def _host_agent() -> list[str]:
    exe = shutil.which("sockdebug-agent")
    return [exe] if exe else [sys.executable, "-m", "sockdebug_agent"]


@pytest.mark.root
def test_host_side_target_pid(target: dict) -> None:
    """The nsenter scenario: the host's agent enters the container's netns by PID."""
    if os.geteuid() != 0:
        pytest.skip("entering another network namespace needs root")
    r = subprocess.run(
        [*_host_agent(), "--target-pid", str(target["host_pid"]), "sockets", "-tlp"],
        capture_output=True,
        text=True,
        timeout=AGENT_TIMEOUT,
    )
    records = _records(r.stdout)
    assert r.returncode == 0, (r.stdout, r.stderr)
    sockets = _sockets(records)
    for addr, port in (("127.0.0.1", 8080), ("0.0.0.0", 9090)):
        s = _find(sockets, "LISTEN", addr, port)
        comms = {p["comm"] for p in s.get("processes") or []}
        assert comms == {"python3"}, s
    # -l: listeners only, and only the container's (the host's are not in its netns).
    assert {s["state"] for s in sockets} == {"LISTEN"}
    assert {(s["local_address"], s["local_port"]) for s in sockets} == {
        ("127.0.0.1", 8080),
        ("0.0.0.0", 9090),
    }
