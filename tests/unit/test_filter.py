"""ss's selection and expression semantics on synthetic sockets (no kernel needed);
the integration tests check the same against ss itself."""

from __future__ import annotations

import pytest
from sockdebug_agent.filter import (
    ALL,
    LISTEN,
    SS_CONN,
    FilterError,
    parse_expression,
    select,
    split_words,
)
from sockdebug_agent.schema import Socket


def tcp(lport, pport=0, local="127.0.0.1", peer="127.0.0.1", state="ESTAB", cookie=1):
    fam = "inet6" if ":" in local else "inet"
    return Socket(fam, "tcp", state, 0, 0, local, lport, peer, pport, None, 1, 0, cookie)


def unix(name, inode=5000, peer=0):
    return Socket("unix", "u_str", "ESTAB", 0, 0, name, inode, None, peer, None, inode, 0, 1)


def picks(words, socks, **kw):
    pred = parse_expression(words.split(), **kw)
    return [s.local_port for s in socks if pred(s)]


SOCKS = [tcp(8080, 40000), tcp(8080, 0, state="LISTEN"), tcp(9090, 0, state="LISTEN"), tcp(9090, 50000),
         tcp(40000, 8080)]


def test_left_to_right_without_precedence():
    # (A or B) and C -- not A or (B and C)
    assert picks("sport = :8080 or sport = :9090 and dport = :0", SOCKS) == [8080, 9090]
    assert picks("sport = :8080 or ( sport = :9090 and dport = :0 )", SOCKS) == [8080, 8080, 9090]
    # (A and B) or C
    assert picks("dport = :0 and sport = :9090 or sport = :40000", SOCKS) == [9090, 40000]
    # not binds to the next condition only
    assert picks("not sport = :8080 or dport = :8080", SOCKS) == [9090, 9090, 40000]
    assert picks("not ( sport = :8080 or dport = :8080 )", SOCKS) == [9090, 9090]
    # implicit AND, and every spelling of and/or
    assert picks("sport = :8080 dport = :0", SOCKS) == [8080]
    assert picks("sport = :8080 && dport = :0 || sport = :40000", SOCKS) == [8080, 40000]
    assert picks("sport = :8080 & dport = :0 | sport = :40000", SOCKS) == [8080, 40000]


@pytest.mark.parametrize("words, want", [
    ("sport gt :9000", [9090, 9090, 40000]), ("sport > :9090", [40000]), ("sport >= :9090", [9090, 9090, 40000]),
    ("sport ge :9090", [9090, 9090, 40000]), ("sport geq :9090", [9090, 9090, 40000]),
    ("sport < :9090", [8080, 8080]), ("sport lt :9090", [8080, 8080]), ("sport <= :8080", [8080, 8080]),
    ("sport le :8080", [8080, 8080]), ("sport leq :8080", [8080, 8080]), ("sport != :8080", [9090, 9090, 40000]),
    ("sport ne :8080", [9090, 9090, 40000]), ("sport neq :8080", [9090, 9090, 40000]),
    ("sport == 8080", [8080, 8080]), ("sport eq :8080", [8080, 8080]), ("sport :8080", [8080, 8080]),
    ("sport = 0x1f90", [8080, 8080]), ("dport = :*", [8080, 8080, 9090, 9090, 40000]),
])
def test_port_operators(words, want):
    assert picks(words, SOCKS) == want


def test_addresses():
    socks = [tcp(1, local="127.0.0.1"), tcp(2, local="10.1.2.3"), tcp(3, local="::1", peer="::1"),
             tcp(4, local="::ffff:127.0.0.1", peer="::ffff:127.0.0.1"), tcp(5, local="::", peer="::")]
    assert picks("src 127.0.0.1", socks) == [1, 4]  # an IPv4 rule matches v4-mapped sockets
    assert picks("src 127.0.0.0/8", socks) == [1, 4]
    assert picks("src 127.0.0.0/255.0.0.0", socks) == [1, 4]
    assert picks("src [::ffff:127.0.0.1]", socks) == [4]  # a mapped rule matches mapped only
    assert picks("src [::1]:3", socks) == [3]
    assert picks("src *:2", socks) == [2] and picks("src 10.1.2.3:*", socks) == [2]
    assert picks("src 127.1", socks) == []  # iproute2 reads 127.1 as 127.1.0.0
    assert picks("src [::]", socks) == [5]
    # ss's userspace check compares raw bits whatever the families: 0.0.0.0/8 covers ::1
    assert picks("src 0.0.0.0/8", socks) == [3, 4, 5]


def test_unix_names_and_autobound():
    socks = [unix("/run/App.sock", 1), unix("@abstract", 2), unix(None, 3), unix("@0a1b2", 4), unix("@0A1B2", 5)]
    assert picks("src unix:/run/*", socks) == [1]
    assert picks("src /RUN/app*", socks) == [1]  # fnmatch, case-insensitive
    assert picks("src @abs*", socks) == [2]
    assert picks("src *", socks, preferred_family="unix") == [1, 2, 3, 4, 5]
    assert picks("dst *", socks, preferred_family="unix") == [1, 2, 3, 4, 5]  # no peer name: ""
    assert picks("autobound", socks) == [3, 4]  # unnamed, or @ and five lower-case hex digits
    # with -x, a port is a name pattern too
    assert picks("sport = :22", [*socks, unix(":22", 22)], preferred_family="unix") == [22]
    assert picks("sport gt :1", socks, preferred_family="unix") == [1, 2, 3, 4, 5]


def test_select_defaults_and_states():
    sel = select()
    assert sel.states == SS_CONN and sel.tables() == ["unix", "raw", "udp", "tcp"]
    assert select(unix=True).states == SS_CONN  # -x is a family flag: no UNCONN datagrams
    assert select(udp=True).states == 1 << 1
    sel = select(unix=True, ipv4=True)
    assert sel.tables() == ["unix", "raw", "udp", "tcp"] and sel.families == {"unix", "inet"}
    assert select(tcp=True, ipv6=True).families == {"inet6"}
    assert select(listening=True).states == 1 << LISTEN | 1 << 7
    assert select(all_states=True, words=["state", "listening"]).states == 1 << LISTEN
    assert select(words=["exclude", "listening"]).states == ALL & ~(1 << LISTEN)
    assert select(words=["excl", "listening", "state", "time-wait"]).states == ALL & ~(1 << LISTEN)
    assert select(tcp=True, words=["exclude", "all"]).states == SS_CONN  # 0 means the defaults
    assert select(words=["state", "ESTABLISHED"]).states == 1 << 1
    sel = select(tcp=True, words=["src", "inet6:[::1]"])
    assert sel.families == {"inet6"} and sel.netlink_family == "inet6"
    assert select(ipv4=True, ipv6=True, preferred_family="inet6").netlink_family == "inet6"
    assert select(tcp=True, unix=True, words=["sport", "=", ":22"]).families == {"unix"}


def test_words_are_split_like_ss():
    assert split_words(["( dport = :22", "or sport\\ x )"]) == [
        ("(", 0), ("dport", 0), ("=", 0), (":22", 0), ("or", 1), ("sport x", 1), (")", 1)]
    sel = select(tcp=True, words=["state", "established", "( sport = :22 )"])
    assert sel.expr(tcp(22)) and not sel.expr(tcp(23))


def test_kernel_and_userspace_evaluations():
    sel = select(tcp=True, all_states=True, words=["autobound"])
    explicit, ephemeral = tcp(40000, cookie=7), tcp(40001, cookie=8)
    sel.unlocked.add(8)  # what the INET_DIAG_BC_AUTO dump returns
    assert sel.matches(ephemeral) and not sel.matches(explicit)
    assert not select(tcp=True, words=["dev", "lo", "or", "autobound"]).kernel_expr  # ss sends no bytecode
    sel = select(tcp=True, all_states=True, words=["not", "src", "0.0.0.0/8"])
    assert not sel.matches(tcp(1, local="::1", peer="::1"))  # userspace says no
    assert sel.matches(tcp(1, local="10.0.0.1"))


@pytest.mark.parametrize("words, word, position", [
    (["sport", "=", ":8080", "and"], None, 4),
    (["(", "sport", "=", ":1"], None, 4),
    (["bogus"], "bogus", 0),
    (["state", "nosuch"], "nosuch", 1),
    (["state"], "state", 0),
    (["sport", "=", ":notaport"], ":notaport", 2),
    (["src", "::1"], "::1", 1),
    (["dst", "[::1"], "[::1", 1),
    (["sport", "=", ":8080", ")"], ")", 3),
    (["state", "established", "sport", "=", ":1", "state", "listening"], "state", 5),
    (["fwmark", "junk"], "junk", 1),
    (["( sport = :1"], None, 1),
])
def test_errors_name_the_word(words, word, position):
    with pytest.raises(FilterError) as err:
        select(tcp=True, words=words)
    assert err.value.word == word and err.value.position == position, str(err.value)
