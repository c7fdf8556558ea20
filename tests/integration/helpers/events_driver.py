"""Run ``sockdebug-agent events`` and close sockets next to it, in this process's network
namespace, and print the agent's JSON Lines.  For the privilege tests, which start it under
setpriv / unshare (so the agent and the closes share that user and namespace):

    python3 events_driver.py SCENARIO[,SCENARIO...] AGENT_ARG...
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import close_sockets


def subscribers() -> int:
    """NETLINK_SOCK_DIAG sockets of this namespace that joined a multicast group."""
    with open("/proc/net/netlink") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[1] == "4" and int(r[3], 16))


def main() -> None:
    scenarios, agent_args = sys.argv[1].split(","), sys.argv[2:]
    subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True)  # a fresh namespace (unshare -n)
    before = subscribers()
    agent = subprocess.Popen([sys.executable, "-m", "sockdebug_agent", "events", "--tick", "0", *agent_args],
                             stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while subscribers() <= before and time.monotonic() < deadline and agent.poll() is None:
        time.sleep(0.05)
    for name in scenarios:
        close_sockets.SCENARIOS[name]()
    time.sleep(0.5)
    agent.send_signal(signal.SIGINT)
    out, _ = agent.communicate(timeout=30)
    sys.stdout.write(out)


if __name__ == "__main__":
    main()
