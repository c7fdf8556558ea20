"""``sockdebug-agent stop`` in a PID namespace of its own, as in an agent container that
shares its target's: it ends the serve process after its stream is complete, and
nothing else (a process of the "app" with ``serve`` in its command line survives)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare (a new PID namespace)")


def _agent() -> str:
    script = os.path.join(os.path.dirname(sys.executable), "sockdebug-agent")
    return f"{sys.executable} {script}" if os.path.exists(script) else str(shutil.which("sockdebug-agent"))


def test_stop_ends_serve_after_its_stream_and_spares_the_app(tmp_path):
    agent = _agent()
    script = f"""
{sys.executable} -c 'import time; time.sleep(30)' serve &
app=$!
SOCKDEBUG_SERVE=1 {agent} serve --idle-timeout 60 > {tmp_path}/serve.out &
serve=$!
sleep 1.5
SOCKDEBUG_SERVE=1 {agent} stop > {tmp_path}/stop.out
echo "stop=$?"
wait $serve
echo "serve=$?"
kill -0 $app && echo app-alive
kill $app
{agent} stop > {tmp_path}/again.out
"""
    out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
                         capture_output=True, text=True, timeout=60)
    assert "stop=0" in out.stdout and "serve=0" in out.stdout and "app-alive" in out.stdout, out
    stop = [json.loads(line) for line in (tmp_path / "stop.out").read_text().splitlines()]
    assert [r["type"] for r in stop] == ["hello", "end"]  # complete before the serve process ended
    again = [json.loads(line) for line in (tmp_path / "again.out").read_text().splitlines()]
    assert [r.get("code") for r in again if r["type"] == "warning"] == ["not-serving"]
    assert again[-1] == {**again[-1], "type": "end", "exit_code": 0}
