"""ss's selection and expression semantics on synthetic sockets (no kernel needed);
the integration tests check the same against ss itself."""

from __future__ import annotations

import os

import pytest
from sockdebug_agent.filter import (
    ALL,
    LISTEN,
    SS_CONN,
    FilterError,
    parse,
    parse_expression,
    select,
    split_words,
)
from sockdebug_agent.schema import Socket
from sockdebug_agent.ssfilter import And, Cgroup, Mark, Not, Or, PortBound


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


# --- the syntax tree ------------------------------------------------------------------------

def test_tree_shapes():
    tree = parse(["sport", "=", ":1", "or", "sport", "=", ":2", "or", "sport", "=", ":3"]).tree
    assert type(tree) is Or and len(tree.items) == 3  # a run of one operator is one node
    tree = parse(["sport", "=", ":1", "or", "sport", "=", ":2", "and", "sport", "=", ":3"]).tree
    assert type(tree) is And and type(tree.items[0]) is Or  # left to right
    one = parse(["sport = :1"]).tree  # one argument: every token at position 0
    assert parse(["not not sport = :1"]).tree == one
    assert type(parse(["not not not sport = :1"]).tree) is Not
    assert parse(["( ( ( sport = :1 ) ) )"]).tree == one
    tree = parse(["sport", ">", ":1", "dport", "!=", ":2"]).tree  # > is NOT <=; != is NOT =; implicit and
    assert type(tree) is And and all(type(item) is Not for item in tree.items)
    assert type(tree.items[0].item) is PortBound and not tree.items[0].item.ge
    assert parse(["state", "listening"]).tree is None and parse(["state", "listening"]).states == 1 << LISTEN
    assert parse(["fwmark", "0x2a/0xf0"]).tree == Mark(0x2A, 0xF0)
    assert parse(["fwmark", "!=", "-1"]).tree == Not(Mark(0xFFFFFFFF, 0xFFFFFFFF))
    assert parse(["cgroup", "/a\\ b"]).tree == Cgroup("/a b", 1)  # ss splits words at spaces: escape them


DEPTH = 1500


@pytest.mark.parametrize("words", [
    "( " * 600 + "sport = :22" + " )" * 600,
    "not " * 1000 + "sport = :22",
    "not ( " * 700 + "sport = :22" + " )" * 700,
    " or ".join(["sport = :1"] * DEPTH) + " or sport = :22",
    " and ".join(["sport > :1"] * DEPTH) + " and sport = :22",
    " ".join(f"sport = :{i} {'or' if i % 2 else 'and'}" for i in range(DEPTH)) + " sport = :22",
    " ".join(f"( sport = :{i} or" for i in range(700)) + " sport = :22" + " )" * 700,
], ids=["parentheses", "not", "not-parentheses", "or", "and", "alternating", "nested-or"])
def test_deep_filters_need_no_recursion(words):
    """ss accepts these; parsing and both evaluators must too, whatever Python's
    recursion limit (lowered here to prove it)."""
    import sys

    sel = select(tcp=True, all_states=True, words=words.split())
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(__import__("inspect").stack()) + 60)
    try:
        parse(words.split())
        assert sel.matches(tcp(22)) and sel.expr(tcp(22)) and sel.kernel_expr(tcp(22))
    finally:
        sys.setrecursionlimit(old)


@pytest.mark.parametrize("words, twenty_two", [
    ("sport = :22 or sport = :1 and dport = :9", False),
    ("sport = :22 or ( sport = :1 and dport = :9 )", True),
    ("not ( sport = :22 or sport = :1 ) or dport = :40000", True),
])
def test_closures_and_jump_program_agree(monkeypatch, words, twenty_two):
    """Small trees become closures, big ones a jump program: the same answers."""
    from sockdebug_agent import filter as flt

    socks = [tcp(22, 40000), tcp(1, 9), tcp(1, 40000), tcp(5, 5)]
    closures = [parse_expression(words.split())(s) for s in socks]
    monkeypatch.setattr(flt, "CLOSURE_NODES", 0)
    assert [parse_expression(words.split())(s) for s in socks] == closures
    assert closures[0] == twenty_two


@pytest.mark.parametrize("word", [
    ":\u0661\u0662\u0663", ":\uff11\uff12", ":1\u0662", ":\udcff", ":8\udcff", ":0x\u0661", ":1_0",
])
def test_ports_are_ascii_only(word):
    """ss's strtol reads ASCII digits only (Python's int() also takes Arabic-Indic or
    fullwidth digits, and 1_0);
    undecodable bytes (lone surrogates from argv) are a FilterError, not an encoding crash."""
    with pytest.raises(FilterError) as err:
        select(tcp=True, words=["sport", "=", word])
    assert err.value.position == 2


@pytest.mark.parametrize("words", [
    ["src", "\u0661\u0662\u0667.0.0.1"], ["src", "127.0.0.\udcff"], ["state", "\uff2c\uff29\uff33\uff34\uff25\uff2e"],
    ["state", "\u212aLOSING"], ["fwmark", "\u0661"], ["dev", "a/b"], ["dev", "x" * 16], ["src", "or"],
])
def test_other_non_ascii_and_invalid_words(words):
    with pytest.raises(FilterError):
        select(tcp=True, words=words)


def test_default_any_all_keep_both_families():
    """ss 6.1 keeps IPv6 sockets for `src default` (the old agent made it IPv4 only)."""
    socks = [tcp(1, local="10.0.0.1"), tcp(2, local="::1", peer="::1"), tcp(3, local="fe80::1", peer="::")]
    for word in ("default", "any", "all"):
        sel = select(tcp=True, all_states=True, words=["src", word])
        assert [s.local_port for s in socks if sel.matches(s)] == [1, 2, 3]
    sel = select(tcp=True, all_states=True, words=["dst", "inet:default"])
    assert [s.local_port for s in socks if sel.matches(s)] == [1]
    sel = select(tcp=True, all_states=True, words=["src", "inet6:default"])
    assert [s.local_port for s in socks if sel.matches(s)] == [2, 3]


def marked(port, mark=None, cgroup=None):
    ext = {k: v for k, v in (("fwmark", mark), ("cgroup_id", cgroup)) if v is not None}
    return tcp(port)._replace(extended=ext or None)


def test_fwmark_is_mark_and_mask_equals_value():
    socks = [marked(1, 0x2A), marked(2, 0x2B), marked(3, 0), marked(4), unix("/x", 5), marked(6, 0xFF2A)]
    assert picks("fwmark 0x2a", socks) == [1]
    assert picks("fwmark = 42", socks) == [1]
    assert picks("fwmark 052", socks) == [1]  # %i: leading 0 is octal
    assert picks("fwmark 0x2a/0xff", socks) == [1, 6]
    assert picks("fwmark 0x20/0xf0", socks) == [1, 2, 6]
    assert picks("fwmark 0x2a/0xf0", socks) == []  # ss does not mask the value: 0x2a & 0xf0 != 0x2a
    assert picks("fwmark 0", socks) == [3, 4, 5]  # no mark sent (unix, /proc, no CAP_NET_ADMIN): 0
    assert picks("fwmark != 0", socks) == [1, 2, 6]
    sel = select(tcp=True, words=["fwmark", "1"])
    assert sel.marks and sel.reads_fwmark and sel.kernel_expr is not None
    assert not select(tcp=True, words=["sport", "=", ":1"]).marks


def fake_cgroup2(tmp_path, monkeypatch):
    """A directory tree standing in for the cgroup2 mount, named in a fake mountinfo."""
    root = tmp_path / "cg2"
    (root / "app" / "web").mkdir(parents=True)
    (root / "app" / "cgroup.procs").write_text("")
    info = tmp_path / "mountinfo"
    info.write_text(f"25 1 0:23 / /sys rw - sysfs sysfs rw\n"
                    f"41 31 0:38 / {root} rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
                    f"42 31 0:39 / /mnt/a\\040b\\134c rw - cgroup2 none rw\n")
    from sockdebug_agent import filter as flt

    real = flt.cgroup2_mounts
    monkeypatch.setattr(flt, "cgroup2_mounts", lambda mountinfo="": real(str(info)))
    return root


def test_cgroup_paths_resolve_under_the_cgroup2_mount(tmp_path, monkeypatch):
    from sockdebug_agent import filter as flt

    root = fake_cgroup2(tmp_path, monkeypatch)
    web, app = os.stat(root / "app" / "web").st_ino, os.stat(root / "app").st_ino
    socks = [marked(1, cgroup=web), marked(2, cgroup=app), marked(3), unix("/x", 4)]
    assert picks("cgroup /app/web", socks) == [1]
    assert picks("cgroup app/web", socks) == [1]  # relative to the mount, as ss's second try
    assert picks(f"cgroup {root}/app", socks) == [2]  # a path under the mount
    assert picks("cgroup != /app", socks) == [1, 3, 4]
    assert picks("cgroup /", [marked(9, cgroup=os.stat(root).st_ino)]) == [9]  # not ss: see docs/design.md
    assert flt.cgroup2_mounts()[1] == "/mnt/a b\\c"  # mountinfo's octal escapes
    for bad in ("/nosuch", "/app/cgroup.procs"):
        with pytest.raises(FilterError) as err:
            select(tcp=True, words=["cgroup", bad])
        assert err.value.word == bad and err.value.position == 1


def test_no_cgroup2_mount(monkeypatch):
    from sockdebug_agent import filter as flt

    monkeypatch.setattr(flt, "cgroup2_mounts", lambda mountinfo="": [])
    with pytest.raises(FilterError, match="no cgroup2 filesystem is mounted"):
        select(tcp=True, words=["cgroup", "/x"])


def test_long_filters_are_quoted_briefly():
    from sockdebug_agent.query import filter_usage_error

    words = ["sport", "=", ":1", "or"] * 400 + ["bogus", "x" * 500]
    with pytest.raises(FilterError) as err:
        select(tcp=True, words=words)
    cause = filter_usage_error(err.value, words).cause
    assert "(word 1601: ... sport = :1 or >>bogus<< " in cause and len(cause) < 300
