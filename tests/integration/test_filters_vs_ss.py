"""State selection and filter expressions: the agent and ``ss`` given the same flags and
words select the same sockets of the fixture namespace.

Each case is (flags, words, expected): ss runs as ``ss FLAGSnH WORDS``, the agent as
``sockets FLAGS WORDS``; sockets are compared as multisets of (netid, local address,
local port, peer address, peer port).  ``expected`` says whether ss itself selects
something ("some") or nothing ("none"), so a case cannot pass by both sides failing
to see the fixture.  ``{dir}`` and ``{abstract}`` are the fixture's unix names.
"""

from __future__ import annotations

import shlex
import subprocess
from collections import Counter

import pytest
from helpers.ss_text import agent_row, parse, snapshot

pytestmark = pytest.mark.root

SOME, NONE = "some", "none"
CASES = [
    # --- default state selection per table, -l, -a, families -------------------------
    ("-t", "", SOME), ("-u", "", SOME), ("-x", "", SOME), ("", "", SOME), ("-w", "", NONE),
    ("-tu", "", SOME), ("-tx", "", SOME), ("-ux", "", SOME),
    ("-l", "", SOME), ("-a", "", SOME), ("-tl", "", SOME), ("-ul", "", SOME), ("-xl", "", SOME),
    ("-wl", "", SOME), ("-wa", "", SOME),
    ("-4", "", SOME), ("-6", "", SOME), ("-6a", "", SOME), ("-4l", "", SOME), ("-t4", "", SOME),
    ("-u6a", "", SOME), ("-x4a", "", SOME), ("-46l", "", SOME),
    # --- state words and groups (before the expression; repeated state words are OR-ed)
    ("-tux", "state established", SOME), ("-tux", "state connected", SOME),
    ("-tux", "state synchronized", SOME), ("-tu", "state bucket", SOME), ("-tux", "state big", SOME),
    ("-tux", "exclude listening", SOME), ("-t", "excl established", SOME),
    ("-tu", "state listening state time-wait", SOME), ("-t", "state fin-wait-2", SOME),
    ("-t", "state syn-sent", SOME), ("-t", "state close-wait", SOME), ("-u", "state unconnected", SOME),
    ("-x", "state closed", SOME), ("-t", "state all", SOME), ("-tl", "state established", SOME),
    ("-t", "state ESTABLISHED", SOME), ("-t", "exclude all", SOME), ("-t", "state syn-recv", NONE),
    ("-t", "exclude listening exclude established", SOME),
    # --- ports: every operator spelling --------------------------------------------------
    ("-tua", "sport = :8080", SOME), ("-tua", "sport == 8080", SOME), ("-tua", "sport eq :8080", SOME),
    ("-tua", "sport :8080", SOME), ("-tua", "dport eq :80", SOME), ("-tua", "sport != :22", SOME),
    ("-tua", "sport ne :8080", SOME), ("-tua", "dport neq :8080", SOME), ("-tua", "sport gt :1024", SOME),
    ("-tua", "sport > :1024", SOME), ("-tua", "dport lt :9000", SOME), ("-tua", "dport < :9000", SOME),
    ("-tua", "sport ge :8080", SOME), ("-tua", "sport >= :8080", SOME), ("-tua", "sport geq :9000", SOME),
    ("-tua", "sport le :8080", SOME), ("-tua", "sport <= :8080", SOME), ("-tua", "sport leq :80", SOME),
    ("-tua", "dport = :http", SOME), ("-tua", "sport = 0x1f90", SOME), ("-tua", "sport = :*", SOME),
    ("-ua", "sport = :5353", SOME), ("-a", "sport = :8080", SOME),
    # --- addresses ------------------------------------------------------------------------
    ("-tua", "src 127.0.0.1", SOME), ("-tua", "src 127.0.0.0/8", SOME), ("-tua", "src = 127.0.0.1", SOME),
    ("-tua", "src == 127.0.0.1", SOME), ("-tua", "src eq 127.0.0.1", SOME), ("-tua", "dst [::1]", SOME),
    ("-tua", "src [::1]:9443", SOME), ("-tua", "dst 127.0.0.1:8080", SOME), ("-tua", "src 127.0.0.1:*", SOME),
    ("-tua", "src *:8080", SOME), ("-tua", "src [::ffff:127.0.0.1]", SOME), ("-tua", "src [::]", SOME),
    ("-tua", "src inet:127.0.0.1", SOME), ("-tua", "src inet6:[::1]", SOME), ("-a", "dst 0.0.0.0/0", SOME),
    ("-a", "src *", SOME), ("-tua", "src 127.1", NONE), ("-tua", "src localhost", SOME),
    ("-tua", "src 127.0.0.0/255.0.0.0", SOME), ("-tua", "src [::1/128]:9443", SOME),
    ("-tua", "src 0.0.0.0/8", SOME), ("-tua", "not src 0.0.0.0/8", SOME), ("-4a", "src 127.0.0.1", SOME),
    ("-6a", "dst [::1]", SOME), ("-a", "dst 127.0.0.1:5353", SOME), ("-wa", "src 0.0.0.0", SOME),
    ("-wa", "sport = :1", SOME), ("-a", "src inet:127.0.0.1", SOME),
    # --- not, parentheses, and/or spellings, implicit AND, left-to-right evaluation -------
    ("-tua", "not sport = :8080", SOME), ("-tua", "! dport = :8080", SOME),
    ("-tua", "( sport = :8080 or dport = :8080 )", SOME),
    ("-tua", "state established ( sport = :8080 or dport = :8080 )", SOME),
    ("-tua", "state established '( sport = :8080 or dport = :8080 )'", SOME),  # one word, split like ss
    ("-tua", "( sport = :8080 || dport = :8080 ) && src 127.0.0.1", SOME),
    ("-tua", "sport = :8080 | sport = :9090 & dport = :0", SOME),
    # left to right: (A or B) and C, not A or (B and C)
    ("-tua", "sport = :8080 or sport = :9090 and dport = :0", SOME),
    ("-tua", "dport = :0 and sport = :8080 or sport = :9443", SOME),
    ("-tua", "not sport = :8080 or dport = :8080", SOME),
    ("-tua", "not ( sport = :8080 or dport = :8080 )", SOME),
    ("-tua", "sport = :8080 dport = :0", SOME),  # implicit AND
    ("-tua", "src 127.0.0.1 and not dport = :8080 or sport = :9443", SOME),
    # --- dev, autobound -------------------------------------------------------------------
    ("-tua", "dev lo", SOME), ("-tua", "dev = lo", SOME), ("-tua", "dev != lo", SOME), ("-tua", "dev 1", SOME),
    ("-tua", "dev eq 1 or sport = :8080", SOME),
    ("-tua", "autobound", SOME), ("-tua", "not autobound", SOME), ("-ua", "autobound", SOME),
    ("-tua", "sport > :1024 and not autobound", SOME), ("-tua", "autobound and dport = :80", NONE),
    ("-xa", "autobound", SOME), ("-a", "autobound or dev lo", SOME),
    # --- unix names: fnmatch, case-insensitive ---------------------------------------------
    ("-xa", "src {dir}/*", SOME), ("-xa", "src {dir}/STREAM*", SOME), ("-xa", "src @sdt-abstract*", SOME),
    ("-xa", "src {abstract}", SOME), ("-xa", "src unix:@sdt*", SOME), ("-xa", "src *.sock", SOME),
    ("-xa", "dst *", SOME), ("-xa", "not src *", NONE), ("-xa", "sport gt :1024", SOME),
    ("-xa", "sport lt :1024", NONE), ("-a", "src unix:{dir}/*", SOME),
    # With -x last, ss reads every host and port as a unix name (and shows only unix sockets)
    ("-tuxa", "sport = :8080", NONE), ("-tuxa", "src 127.0.0.1", NONE), ("-x4a", "src 127.0.0.1", SOME),
    ("-4xa", "src 127.0.0.1", NONE),
    # --- default/any/all: every address, of both families unless one is named -------------
    ("-tua", "src default", SOME), ("-tua", "dst default", SOME), ("-tua", "src any", SOME),
    ("-tua", "dst all", SOME), ("-tua", "not src default", NONE), ("-6a", "src default", SOME),
    ("-4a", "dst default", SOME), ("-tua", "src inet6:default", SOME), ("-tua", "dst inet:default", SOME),
    ("-tua", "src default:8080", SOME), ("-a", "src default", SOME),
    # --- the last of -a/-l counts ------------------------------------------------------------
    ("-tal", "", SOME), ("-tla", "", SOME), ("-ual", "", SOME),
]


def _ss_netid(flags: str):
    """The netid of ss's rows when it hides that column (exactly one table)."""
    tables = [t for t in "tuw" if t in flags]
    if len(tables) == 1 and "x" not in flags:
        return {"t": "tcp", "u": "udp", "w": "raw"}[tables[0]]
    return None


def _words(sock_ns, words: str) -> list[str]:
    info = sock_ns.info["main"]
    text = words.replace("{dir}", sock_ns.workdir).replace("{abstract}", info["abstract"])
    return shlex.split(text)


def _keys(rows) -> Counter:
    return Counter(r.key for r in rows)


@pytest.mark.parametrize("flags, words, expected", CASES, ids=[f"{f or '-'} {w}".strip() for f, w, _ in CASES])
def test_same_sockets_as_ss(sock_ns, run_agent, flags, words, expected):
    _compare_with_ss(sock_ns, run_agent, flags, _words(sock_ns, words), expected)


def _alternating(terms: int) -> str:
    """A left-to-right chain switching between and/or at every term (each switch nests
    the tree one level deeper), ending in ``or sport = :8080``."""
    words = ["sport = :9090"]
    for i in range(terms - 2):
        words += ["and" if i % 2 else "or", f"dport = :{i % 40 + 1}" if i % 3 else "src 127.0.0.1"]
    return " ".join([*words, "or sport = :8080"])


# ss accepts these (its bison parser and C evaluator have no small depth limit); so must the agent.
DEEP = [
    ("600 nested parentheses", "-tua", "( " * 600 + "sport = :8080" + " )" * 600, SOME),
    ("1000 not", "-tua", "not " * 1000 + "sport = :8080", SOME),
    ("1001 not", "-tua", "not " * 1001 + "sport = :8080", SOME),
    ("1500-term or", "-tua", " or ".join(f"sport = :{p}" for p in range(9000, 10499)) + " or dport = :8080", SOME),
    ("1500-term and", "-tua", " and ".join(["not sport = :1"] * 1499 + ["dport = :8080"]), SOME),
    ("1500-term implicit and", "-tua", " ".join(["sport > :1"] * 1499 + ["sport = :8080"]), SOME),
    ("1500 terms alternating and/or", "-tua", _alternating(1500), SOME),
    ("300 nested mixed groups", "-tua",
     " ".join(f"( sport = :{9000 + i} or ( dport = :{i} and" for i in range(300)) + " src 127.0.0.1"
     + " ) )" * 300 + " or sport = :8080", SOME),
    ("600 not before parentheses", "-tua", "not ( " * 600 + "sport = :8080" + " )" * 600, SOME),
]


@pytest.mark.parametrize("flags, words, expected", [d[1:] for d in DEEP], ids=[d[0] for d in DEEP])
def test_deep_filters_as_ss(sock_ns, run_agent, flags, words, expected):
    _compare_with_ss(sock_ns, run_agent, flags, words.split(), expected)


def _compare_with_ss(sock_ns, run_agent, flags: str, argv: list[str], expected: str) -> None:
    ss_flags = (flags or "-") + "nH"

    def run_ss():
        proc = sock_ns.ss(ss_flags, *argv, check=False)
        assert proc.returncode == 0, proc.stderr
        return parse(proc.stdout, _ss_netid(flags))

    rows, run = snapshot(run_ss, lambda: run_agent("--netns", sock_ns.name, "sockets",
                                                   *([flags] if flags else []), *argv))
    assert run.returncode == 0, run.stderr
    want = _keys(rows)
    got = _keys(agent_row(r) for r in run.sockets)
    assert got == want, f"only ss: {sorted(map(str, want - got))}\nonly agent: {sorted(map(str, got - want))}"
    assert (len(want) > 0) == (expected == SOME), f"ss selected {len(want)} sockets"


def test_left_to_right_is_not_usual_precedence(sock_ns, run_agent):
    """The precedence case selects fewer sockets than ``A or (B and C)`` would."""
    words = ["sport", "=", ":8080", "or", "sport", "=", ":9090", "and", "dport", "=", ":0"]
    run = run_agent("--netns", sock_ns.name, "sockets", "-ta", *words)
    picked = {(r["local_port"], r["peer_port"]) for r in run.sockets}
    assert picked == {(8080, 0), (9090, 0)}  # the two listeners, not the 8080 connections


def test_autobound_follows_the_kernel_bind_lock(sock_ns, run_agent):
    """A client bound explicitly to a port inside the ephemeral range is not autobound
    (SOCK_BINDPORT_LOCK), for ss and for the agent."""
    run = run_agent("--netns", sock_ns.name, "sockets", "-ta", "autobound")
    ports = {r["local_port"] for r in run.sockets}
    assert 40000 not in ports and sock_ns.info["peer"]["shared_port"] not in ports
    assert set(sock_ns.info["main"]["syn_sent_ports"]) <= ports


INVALID = [
    (["sport", "=", ":8080", "and"], "and"),
    (["(", "sport", "=", ":1"], "("),
    (["bogus"], "bogus"),
    (["state", "nosuch"], "nosuch"),
    (["state"], "state"),
    (["sport", "=", ":notaport"], "notaport"),
    (["dev", "nosuch0"], "nosuch0"),
    (["src", "::1"], "::1"),
    (["dst", "[::1"], "[::1"),
    (["sport", "=", ":8080", ")"], ")"),
    (["src"], "src"),
    (["sport", "=", ":22", "state", "listening"], "state"),
    # non-ASCII digits: strtol (and so ss) reads ASCII digits only; Python's int() would not
    (["sport", "=", ":\u0661\u0662\u0663"], "\u0661\u0662\u0663"),  # Arabic-Indic 123
    (["dport", ">", ":\uff11\uff12\uff13"], "\uff11\uff12\uff13"),  # fullwidth 123
    (["sport", "=", ":1\u0662"], "1\u0662"),
    (["dev", "\u0661"], "\u0661"),
    (["src", "\u0661\u0662\u0667.0.0.1"], "\u0661\u0662\u0667.0.0.1"),
    (["state", "\uff2c\uff29\uff33\uff34\uff25\uff2e\uff29\uff2e\uff27"], "\uff2c"),  # fullwidth LISTENING
    (["src", "default/0"], "default/0"),
]


@pytest.mark.parametrize("words, offending", INVALID, ids=[" ".join(w) for w, _ in INVALID])
def test_invalid_expressions(sock_ns, run_agent, words, offending):
    """ss refuses them too; the agent exits 2, names the word on stderr, and still
    frames its stream with an error record (never a traceback)."""
    assert sock_ns.ss("-tanH", *words, check=False).returncode != 0
    run = run_agent("--netns", sock_ns.name, "sockets", "-ta", *words)
    assert run.returncode == 2
    assert offending in run.stderr and "invalid filter" in run.stderr
    (error,) = run.of_type("error")
    assert error["code"] == "usage" and offending in error["message"]
    assert not run.sockets


@pytest.mark.parametrize("word", [b":\xff", b":8\xff", b"\xff", b"127.0.0.\xff"])
def test_invalid_utf8_words_are_usage_errors(sock_ns, run_agent, word):
    """A word that is not UTF-8 (Python sees lone surrogates) is a usage error naming the
    word, never "internal"; ss refuses it too."""
    key = b"sport" if word.startswith(b":") else b"src"
    ss = subprocess.run(["ip", "netns", "exec", sock_ns.name, "ss", "-tanH", key, b"=", word], capture_output=True,
                        timeout=60)  # bytes out: ss echoes the word
    assert ss.returncode != 0 and b"\xff" in ss.stderr
    run = run_agent("--netns", sock_ns.name, "sockets", "-ta", key, "=", word)
    assert run.returncode == 2, run.stderr
    (error,) = run.of_type("error")
    # the byte is named the way every string the agent emits names one (schema.text: \xff)
    assert error["code"] == "usage" and "\\xff" in error["message"] and "invalid filter" in error["message"]
