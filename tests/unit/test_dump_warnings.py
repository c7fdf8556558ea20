"""A dump the kernel flags as interrupted (NLM_F_DUMP_INTR, simulated here on the real
kernel's reply) is kept as streamed, warned about, and the next family is still read.
Repeats dropped by the cookie window: tests/integration/test_churn.py."""

from __future__ import annotations

import socket

import pytest
from sockdebug_agent import netlink
from sockdebug_agent.filter import select
from sockdebug_agent.inspectors.sockets import Details, collect


@pytest.fixture
def two_listeners():
    v4, v6 = socket.socket(), socket.socket(socket.AF_INET6)
    v4.bind(("127.0.0.1", 0))
    v6.bind(("::1", 0))
    for s in (v4, v6):
        s.listen(1)
    yield v4.getsockname()[1], v6.getsockname()[1]
    v4.close()
    v6.close()


@pytest.mark.parametrize("lines", [False, True])
def test_an_interrupted_family_is_kept_and_the_next_is_read(monkeypatch, two_listeners, lines):
    real_dump = netlink.Netlink.dump
    calls = []

    def flagged_first(self, *args, **kwargs):
        calls.append(args)
        yield from real_dump(self, *args, **kwargs)
        if len(calls) == 1:
            raise netlink.DumpInterrupted()

    monkeypatch.setattr(netlink.Netlink, "dump", flagged_first)
    warnings = []
    found = [s for b in collect(select(tcp=True, listening=True), Details(), warnings.append, lines=lines) for s in b]
    ports = {s.local_port for s in found} if not lines else {int(s.split('"local_port":')[1].split(",")[0])
                                                             for s in found}
    assert set(two_listeners) <= ports  # the IPv4 one streamed before the flag, the IPv6 one after
    assert [(w.code, w.count) for w in warnings] == [("dump-interrupted", None)]
    assert "tcp (inet)" in warnings[0].message
