"""The query contract between the plugin and the agent: what to ask, as one typed value.

A ``Query`` is a command, its ss-style socket flags and filter words, and its options.
The plugin builds one, ``check()`` s it on the laptop (flags, options and the filter's
*syntax*: no host, port, device or cgroup name is looked up there) and runs the agent
with ``to_argv()``.  The agent's command line is built from the same tables
(``add_commands``, called by ``cli.build_parser``) and read back with ``from_args``, so
``Query.from_argv(q.to_argv()) == q`` for every query (tests/unit/test_query.py).
Names are resolved only by ``selection()``, inside the agent.

Kept light for the agent's start-up: plain slotted classes (``ssfilter.Value``), and
argparse imported only when a parser is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Optional

from .errors import UsageError
from .ssfilter import Expression, FilterError, Value, parse

COMMANDS = ("sockets", "summary", "routes", "interfaces", "limits", "triage", "pods", "events", "ids")
SOCKET_COMMANDS = ("sockets", "pods")  #: the commands that take every socket flag
FILTER_COMMANDS = (*SOCKET_COMMANDS, "events")  #: the commands that take socket flags and filter words
#: ss -E's flags: the destroy groups (-t -u -4 -6), and the agent's -p and -i
EVENTS_FLAGS = ("tcp", "udp", "ipv4", "ipv6", "processes", "info")
MIN_RCVBUF = 4096  #: events --rcvbuf
FAIL_ON = ("critical", "warning", "info", "never")  #: triage --fail-on
COMMAND_HELP = {
    "sockets": "list sockets, like ss",
    "summary": "socket totals and TCP state counts, like ss -s",
    "routes": "every route of every table, IPv4 and IPv6 (ip route show table all)",
    "interfaces": "links and their addresses (ip -d addr)",
    "limits": "open fds against their limits, kernel limits and pressure counters",
    "triage": "findings in plain language, most severe first, then the figures",
    "pods": "on a node (host PID namespace, root): a netns record per pod network namespace (found through "
            "/proc/PID/cgroup), then its sockets",
    "events": "every TCP/UDP socket as the kernel destroys it, with its final figures (ss -E), and tick records "
              "with counts, until --for, --count or a signal",
    "ids": "the uid and gid of every other visible process (/proc/PID/status: no privilege needed), with its "
           "container",
}
# The socket flags, in the order to_argv writes them: (SocketFlags field, short, long, help).
# argparse's dest is the long option's name (``--options`` -> args.options).
SOCKET_FLAGS = (
    ("listening", "-l", "--listening", "listening sockets only (the last of -a/-l counts, as in ss)"),
    ("all", "-a", "--all", "listening and non-listening sockets (the last of -a/-l counts)"),
    ("tcp", "-t", "--tcp", "TCP sockets"),
    ("udp", "-u", "--udp", "UDP sockets"),
    ("unix", "-x", "--unix", "unix domain sockets"),
    ("raw", "-w", "--raw", "RAW sockets"),
    ("ipv4", "-4", "--ipv4", "IPv4 only"),
    ("ipv6", "-6", "--ipv6", "IPv6 only"),
    ("processes", "-p", "--processes", "owning processes (pid, comm, fd)"),
    ("timers", "-o", "--options", "timers"),
    ("extended", "-e", "--extended", "details (implies -o)"),
    ("memory", "-m", "--memory", "socket memory (skmem)"),
    ("info", "-i", "--info", "TCP internals (tcp_info)"),
)
# Family flags and the ss family each selects, in ss's order: without a -x/-4/-6 given
# last, the filter's addresses are read in the family of the last of these that is set.
FAMILY_FLAGS = (("unix", "unix"), ("ipv4", "inet"), ("ipv6", "inet6"))
FILTER_HINT = ("ss(8) syntax: [state S | exclude S]... then src|dst HOST, sport|dport [OP] PORT, dev IFACE, "
               "fwmark MARK[/MASK], cgroup PATH, autobound, joined by and/or/not and ( )")


class SocketFlags(Value):
    """ss's table, state and detail flags (``sockets``/``pods``)."""

    __slots__ = (*(field for field, *_ in SOCKET_FLAGS), "preferred_family")

    def __init__(self, listening: bool = False, all: bool = False, tcp: bool = False, udp: bool = False,
                 unix: bool = False, raw: bool = False, ipv4: bool = False, ipv6: bool = False,
                 processes: bool = False, timers: bool = False, extended: bool = False, memory: bool = False,
                 info: bool = False, preferred_family: Optional[str] = None):
        # -l, -a: ss keeps the last one given; to_argv writes -l first, so -a wins over -l here
        self.listening, self.all = listening and not all, all
        self.tcp, self.udp, self.unix, self.raw = tcp, udp, unix, raw  # -t, -u, -x, -w
        self.ipv4, self.ipv6 = ipv4, ipv6  # -4, -6
        self.processes, self.timers, self.extended = processes, timers, extended  # -p, -o, -e
        self.memory, self.info = memory, info  # -m, -i
        #: the family flag given last (unix, inet or inet6), only when it is not the last set
        #: one in the order -x, -4, -6: ss reads the filter's addresses in that family
        self.preferred_family = preferred_family

    def families(self) -> list[str]:
        """The families of the family flags set, in ss's order."""
        return [family for field, family in FAMILY_FLAGS if getattr(self, field)]

    def filter_family(self) -> Optional[str]:
        """The family the filter's addresses and ports are read in (ss's preferred_family)."""
        families = self.families()
        return self.preferred_family if self.preferred_family in families else (families[-1] if families else None)


class Query(Value):
    """One agent command: what the plugin asks and the agent answers."""

    __slots__ = ("all_processes", "command", "count", "duration", "fail_on", "flags", "host", "no_watch", "rcvbuf",
                 "sockets", "stdin_stop", "tick", "words")

    def __init__(self, command: str = "sockets", flags: Optional[SocketFlags] = None, words: Sequence[str] = (),
                 fail_on: str = "never", sockets: bool = False, host: bool = False, all_processes: bool = False,
                 duration: Optional[str] = None, count: Optional[int] = None, tick: Optional[float] = None,
                 no_watch: bool = False, rcvbuf: Optional[int] = None, stdin_stop: bool = False):
        self.command = command  #: one of COMMANDS
        self.flags = flags if flags is not None else SocketFlags()  #: sockets, pods
        self.words = tuple(words)  #: sockets, pods: ss state words and filter expression, as given
        self.fail_on = fail_on  #: triage --fail-on
        self.sockets = sockets  #: triage --sockets
        self.host = host  #: triage --host
        self.all_processes = all_processes  #: limits --all-processes
        self.duration = duration  #: events --for, as given (30s, 2m, 500ms, seconds); None: until stopped
        self.count = count  #: events --count
        self.tick = tick  #: events --tick, seconds; None: the agent's default
        self.no_watch = no_watch  #: events --no-watch
        self.rcvbuf = rcvbuf  #: events --rcvbuf, bytes; None: the agent's default
        self.stdin_stop = stdin_stop  #: events --stdin-stop: a byte or EOF on stdin ends it as SIGINT does

    # -- argv
    def to_argv(self) -> list[str]:
        """The agent's command line for this query (after any --netns/--target-pid)."""
        argv = [self.command]
        if self.command in FILTER_COMMANDS:
            flags, late = self.flags, None
            for field, short, _long, _help in SOCKET_FLAGS:
                if getattr(flags, field):
                    if flags.preferred_family is not None and dict(FAMILY_FLAGS).get(field) == flags.preferred_family:
                        late = short  # given last: ss reads the filter in this family
                    else:
                        argv.append(short)
            if late:
                argv.append(late)
        if self.fail_on != "never":
            argv += ["--fail-on", self.fail_on]
        for field, option in _VALUE_OPTIONS:
            if getattr(self, field) is not None:
                argv += [option, str(getattr(self, field))]
        argv += [option for field, option in _BOOLEAN_OPTIONS if getattr(self, field)]
        if self.command in FILTER_COMMANDS:
            if any(w.startswith("-") for w in self.words):
                argv.append("--")  # a word like -1 is not an option
            argv += self.words
        return argv

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> Query:
        """The query an agent command line asks (``to_argv``'s inverse); raises UsageError."""
        return cls.from_args(_parser().parse_args(list(argv)))

    @classmethod
    def from_args(cls, args: Any) -> Query:
        """The query of the agent's parsed arguments (an argparse Namespace)."""
        command = args.command
        options: dict[str, Any] = {field: bool(getattr(args, field, False)) for field, _ in _BOOLEAN_OPTIONS}
        options.update((field, getattr(args, field, None)) for field, _ in _VALUE_OPTIONS)
        if command not in FILTER_COMMANDS:
            return cls(command, fail_on=getattr(args, "fail_on", "never"), **options)
        values = {field: bool(getattr(args, long[2:], False)) for field, _s, long, _h in SOCKET_FLAGS}
        flags = SocketFlags(**values)
        given = getattr(args, "preferred_family", None)
        families = flags.families()
        if given in families and given != families[-1]:
            flags = flags.replace(preferred_family=given)
        return cls(command, flags, tuple(args.filter or ()), **options)

    # -- checks
    def check(self) -> Query:
        """Flags, options and the filter's syntax, with nothing looked up (the plugin
        runs this on the laptop).  Raises UsageError naming the bad word; returns self."""
        if self.command not in COMMANDS:
            raise UsageError(f"unknown agent command {self.command!r}", f"use one of: {', '.join(COMMANDS)}")
        if self.command not in FILTER_COMMANDS and (self.flags != SocketFlags() or self.words):
            raise UsageError(f"`{self.command}` takes no socket flags or filter", "drop them, or use `sockets`")
        if self.command == "events":
            self._check_events()
        for field, option in (("fail_on", "--fail-on"), *_BOOLEAN_OPTIONS, *_VALUE_OPTIONS):
            if getattr(self, field) != _DEFAULTS[field] and self.command != _OPTION_COMMAND[field]:
                raise UsageError(f"`{self.command}` takes no {option}", f"{option} belongs to "
                                 f"`{_OPTION_COMMAND[field]}`")
        if self.fail_on not in FAIL_ON:
            raise UsageError(f"unknown --fail-on {self.fail_on!r}", f"use one of: {', '.join(FAIL_ON)}")
        preferred = self.flags.preferred_family
        if preferred is not None and preferred not in self.flags.families():
            raise UsageError(f"preferred family {preferred!r} without its flag", "set -x, -4 or -6 to match")
        if not all(isinstance(w, str) for w in self.words):
            raise UsageError("filter words must be text", FILTER_HINT)
        self.expression()
        return self

    def _check_events(self) -> None:
        for field, short, _long, _help in SOCKET_FLAGS:
            if getattr(self.flags, field) and field not in EVENTS_FLAGS:
                raise UsageError(f"`events` takes no {short}", "ss -E follows TCP and UDP: -t, -u, -4, -6 "
                                 "(and the agent's -p, -i)")
        if self.duration is not None:
            try:
                seconds = parse_duration(self.duration)
            except ValueError as exc:
                raise UsageError(f"--for: {exc}", "e.g. --for 30s, --for 2m") from None
            if seconds <= 0:
                raise UsageError("--for must be more than 0", "e.g. --for 30s")
        if self.count is not None and self.count < 1:
            raise UsageError("--count must be at least 1", "e.g. --count 100")
        if self.tick is not None and not 0 <= self.tick < float("inf"):  # nan fails both
            raise UsageError("--tick must be 0 (only the final tick) or more", "e.g. --tick 5")
        if self.rcvbuf is not None and self.rcvbuf < MIN_RCVBUF:
            raise UsageError(f"--rcvbuf must be at least {MIN_RCVBUF} bytes", "leave it out for the default")
        if self.flags.processes and self.no_watch:
            raise UsageError("-p needs the watch: owners come from the table dumps", "drop --no-watch, or -p")

    def expression(self) -> Expression:
        """The filter's state words and syntax tree (nothing resolved); raises UsageError."""
        try:
            return parse(self.words, self.flags.filter_family())
        except FilterError as exc:
            raise filter_usage_error(exc, self.words) from None

    def selection(self, local_port_range: tuple[int, int] = (32768, 60999)):
        """The agent's ``filter.Selection``: names resolved here, in the inspected
        namespace (hosts, ports, devices, cgroups).  Raises UsageError."""
        from .filter import select  # the agent's half: resolution and evaluators

        f = self.flags
        try:
            return select(tcp=f.tcp, udp=f.udp, raw=f.raw, unix=f.unix, ipv4=f.ipv4, ipv6=f.ipv6,
                          all_states=f.all, listening=f.listening, words=self.words,
                          preferred_family=f.filter_family(), local_port_range=local_port_range,
                          parsed=self.expression())
        except FilterError as exc:
            raise filter_usage_error(exc, self.words) from None


_BOOLEAN_OPTIONS = (("sockets", "--sockets"), ("host", "--host"), ("all_processes", "--all-processes"),
                    ("no_watch", "--no-watch"), ("stdin_stop", "--stdin-stop"))
_VALUE_OPTIONS = (("duration", "--for"), ("count", "--count"), ("tick", "--tick"), ("rcvbuf", "--rcvbuf"))
_OPTION_COMMAND = {"fail_on": "triage", "sockets": "triage", "host": "triage", "all_processes": "limits",
                   "no_watch": "events", "duration": "events", "count": "events", "tick": "events",
                   "rcvbuf": "events", "stdin_stop": "events"}
_DEFAULTS = {"fail_on": "never", "sockets": False, "host": False, "all_processes": False, "no_watch": False,
             "duration": None, "count": None, "tick": None, "rcvbuf": None, "stdin_stop": False}
# Patterns compiled on first use (re's cache), by the commands and options that read them:
# compiled here, they were about 1 M instructions of every run.
_DURATION = r"^ *([0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}) *(ms|s|m|h)? *$"  # ASCII digits, as ss
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


_ASCII_NUMBER = r"[0-9]{1,12}(\.[0-9]{1,9})?"


def ascii_integer(word: str) -> int:
    """An argparse type: ASCII digits only (int() would take any script's digits, ``1_000``)."""
    if not re.fullmatch(_ASCII_NUMBER, word) or "." in word:
        raise ValueError(word)
    return int(word)


def ascii_seconds(word: str) -> float:
    """An argparse type: seconds in ASCII digits (float() would take ``nan``, ``inf``, ``1e9``)."""
    if not re.fullmatch(_ASCII_NUMBER, word):
        raise ValueError(word)
    return float(word)


def parse_duration(text: str) -> float:
    """``30s``, ``1.5m``, ``500ms``, ``2h`` or plain seconds -> seconds (events --for)."""
    match = re.match(_DURATION, text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 2m, 500ms, or seconds)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def filter_usage_error(exc: FilterError, words: Sequence[str]) -> UsageError:
    """A FilterError as the usage error both programs print: the cause, then where, the
    word marked ``>>word<<`` among a few of its neighbours."""
    words = list(words)
    where = ""
    if exc.position is not None and exc.position < len(words):
        p = exc.position
        start, stop = max(p - 4, 0), min(p + 5, len(words))
        shown = [_short(f">>{w}<<" if i == p else w) for i, w in enumerate(words[start:stop], start)]
        where = f" (word {p + 1}: {'... ' if start else ''}{' '.join(shown)}{' ...' if stop < len(words) else ''})"
    elif exc.position is not None:
        tail = [_short(w) for w in words[-5:]]
        where = f" (after the last word: {'... ' if len(words) > 5 else ''}{' '.join(tail)} >><<)"
    elif exc.word is not None:
        where = f" (at '{_short(exc.word)}')"
    return UsageError(f"invalid filter: {exc}{where}", FILTER_HINT)


def _short(word: str, limit: int = 80) -> str:
    return word if len(word) <= limit else word[:limit] + "..."


# --- the agent's command line ------------------------------------------------------------

def add_commands(sub: Any, help: bool = True, defer: Optional[Callable[[Any, Callable[[Any], None]], None]] = None
                 ) -> None:
    """Add every query command, its flags and options, to an argparse subparsers object
    (the agent's parser, and ``from_argv``'s).  With ``defer``, each command's arguments
    are added by ``defer(parser, fill)``: the agent's parser calls ``fill(parser)`` only
    when that command's parser is used."""
    import argparse
    from functools import partial

    class Flag(argparse.Action):
        """store_true that also sets other attributes: -x/-4/-6 record themselves as the
        last family flag given, and -a/-l clear each other (ss keeps the last one)."""

        def __init__(self, option_strings, dest, also: dict, **kwargs):
            super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)
            self.also = also

        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, self.dest, True)
            for name, value in self.also.items():
                setattr(namespace, name, value)

    also = {"listening": {"all": False}, "all": {"listening": False},
            **{field: {"preferred_family": family} for field, family in FAMILY_FLAGS}}
    for command in COMMANDS:
        p = sub.add_parser(command, help=COMMAND_HELP[command], add_help=help)
        fill = partial(_add_arguments, command, Flag, also)
        if defer is None:
            fill(p)
        else:
            defer(p, fill)


def _add_arguments(command: str, flag_action: Any, also: dict, p: Any) -> None:
    """The flags, options and positional arguments of one command."""
    if command in SOCKET_COMMANDS:
        _add_flags(p, [field for field, *_ in SOCKET_FLAGS], flag_action, also)
        p.add_argument("-n", "--numeric", action="store_true",
                       help="accepted for ss habits; output is always numeric")
        p.add_argument("-H", "--no-header", action="store_true",
                       help="no column headers (tables; JSON Lines have none)")
        p.add_argument("filter", nargs="*", metavar="[state S | exclude S] ... FILTER",
                       help="ss state words and filter expression, e.g. state established '( dport = :443 )'")
    elif command == "limits":
        p.add_argument("--all-processes", action="store_true",
                       help="every visible process, not only those in the inspected network namespace")
    elif command == "events":
        _add_events_arguments(p, flag_action, also)
    elif command == "triage":
        p.add_argument("--fail-on", choices=FAIL_ON, default="never",
                       help="exit 1 when a finding is at least this severe (default: never)")
        p.add_argument("--sockets", action="store_true", help="also emit every socket record")
        p.add_argument("--host", action="store_true",
                       help="this is a node's own network namespace: loopback-only listeners are its "
                            "daemons' normal choice (kubelet, etcd), not a finding")


def _add_flags(p: Any, fields: Sequence[str], flag_action: Any, also: dict) -> None:
    """The SOCKET_FLAGS of ``fields``; those in ``also`` set other attributes too."""
    for field, short, long, text in SOCKET_FLAGS:
        if field not in fields:
            continue
        if field in also:
            p.add_argument(short, long, action=flag_action, also=also[field], help=text)
        else:
            p.add_argument(short, long, action="store_true", help=text)


def _add_events_arguments(p: Any, flag_action: Any, also: dict) -> None:
    """ss -E's flags, the filter, and how the stream ends (--for, --count) and ticks."""
    _add_flags(p, EVENTS_FLAGS, flag_action, also)
    p.add_argument("-n", "--numeric", action="store_true", help="accepted for ss habits; output is always numeric")
    p.add_argument("--for", dest="duration", metavar="DURATION", help="stop after this long (30s, 2m, 500ms, seconds)")
    p.add_argument("--count", type=ascii_integer, metavar="N", help="stop after N events")
    p.add_argument("--tick", type=ascii_seconds, metavar="SECONDS",
                   help="seconds between tick records (default 5; 0: only the final one)")
    p.add_argument("--no-watch", action="store_true",
                   help="no periodic table dumps: no `seen`, no owners, durations from tcp_info only")
    p.add_argument("--rcvbuf", type=ascii_integer, metavar="BYTES",
                   help="netlink receive buffer to ask for (default 8 MiB; above net.core.rmem_max only with "
                        "CAP_NET_ADMIN)")
    p.add_argument("--stdin-stop", action="store_true",
                   help="end as SIGINT does when stdin has a byte or reaches EOF (for a reader that cannot send "
                        "signals: the plugin over `kubectl exec`)")
    p.add_argument("filter", nargs="*", metavar="FILTER", help="ss filter expression, e.g. 'dport = :443' (state "
                   "words are ignored, as by ss -E)")


def _parser() -> Any:
    """A parser of query command lines that raises UsageError instead of exiting."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # type: ignore[override]
            raise UsageError(message, "see sockdebug-agent --help")

    parser = Parser(prog="sockdebug-agent", add_help=False)
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), help=False)
    return parser
