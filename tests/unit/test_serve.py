"""`sockdebug-agent serve`: found by queries, kept alive by them, never killed by them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from sockdebug_agent import serve


def _fake_proc(tmp_path, pid: int, cmdline: bytes, comm: bytes, sigcgt: str) -> None:
    d = tmp_path / str(pid)
    d.mkdir()
    (d / "cmdline").write_bytes(cmdline)
    (d / "comm").write_bytes(comm)
    (d / "status").write_text(f"Name:\tx\nSigCgt:\t{sigcgt}\n")


def test_is_serve_matches_the_agent_not_wrappers():
    assert serve._is_serve(b"/usr/bin/python3\0-I\0/usr/local/bin/sockdebug-agent\0serve\0", b"sockdebug-agent\n")
    assert not serve._is_serve(b"timeout\x005\0sockdebug-agent\0serve\0", b"timeout\n")
    assert not serve._is_serve(b"/usr/local/bin/sockdebug-agent\0sockets\0-tlp\0", b"sockdebug-agent\n")


def test_only_processes_that_catch_sigusr1_are_signalled(tmp_path, monkeypatch):
    cmd = b"/usr/local/bin/sockdebug-agent\0serve\0--idle-timeout\0900\0"
    _fake_proc(tmp_path, 101, cmd, b"sockdebug-agent\n", f"{1 << 9:016x}")  # handler installed
    _fake_proc(tmp_path, 102, cmd, b"sockdebug-agent\n", "0000000000000000")  # still starting
    signalled = []
    monkeypatch.setattr(serve.os, "kill", lambda pid, sig: signalled.append((pid, sig)))
    serve.keep_alive(str(tmp_path))
    assert signalled == [(101, signal.SIGUSR1)]


def test_queries_right_after_start_keep_serve_alive_and_it_exits_when_idle():
    env = dict(os.environ, SOCKDEBUG_SERVE="1")
    # The console script, so the process looks like the image's serve (keep_alive finds it).
    script = os.path.join(os.path.dirname(sys.executable), "sockdebug-agent")
    agent = [sys.executable, script] if os.path.exists(script) else [shutil.which("sockdebug-agent")]
    proc = subprocess.Popen([*agent, "serve", "--idle-timeout", "2"], stdout=subprocess.DEVNULL, env=env)
    try:
        for _ in range(3):  # may arrive before serve has installed its handler
            subprocess.run([*agent, "summary"], stdout=subprocess.DEVNULL, env=env, check=True)
        time.sleep(0.5)
        assert proc.poll() is None
        assert proc.wait(timeout=30) == 0  # then idle for 2 s: exits by itself, cleanly
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stop_picks_only_the_serve_process_of_its_own_container(tmp_path, monkeypatch):
    """Every agent container targeting one app container shares its PID namespace; stop
    must end only its own (the same cgroup), never another profile's agent or the app."""
    serve_cmd = b"/usr/local/bin/sockdebug-agent\0serve\0--idle-timeout\0900\0"
    handler = f"{1 << 9:016x}"
    _fake_proc(tmp_path, 101, serve_cmd, b"sockdebug-agent\n", handler)  # ours
    _fake_proc(tmp_path, 102, serve_cmd, b"sockdebug-agent\n", handler)  # another agent container's
    _fake_proc(tmp_path, 103, b"python3\0server.py\0serve\0", b"python3\n", handler)  # the app
    mine = b"0::/\n"
    for pid, cgroup in ((101, mine), (102, b"0::/../cri-containerd-2ab8.scope\n"), (103, mine)):
        (tmp_path / str(pid) / "cgroup").write_bytes(cgroup)
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_bytes(mine)
    assert serve.own_serve(str(tmp_path)) == [101]
    (tmp_path / "self" / "cgroup").unlink()
    assert serve.own_serve(str(tmp_path)) == []  # its own cgroup unknown: no guess


def test_stop_signals_after_its_stream_is_out(monkeypatch):
    sent = []
    monkeypatch.setattr(serve.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    serve.stop_after_end([101])
    assert sent == []
    serve.send_pending()
    assert sent == [(101, signal.SIGTERM)]
    serve.send_pending()
    assert sent == [(101, signal.SIGTERM)]
