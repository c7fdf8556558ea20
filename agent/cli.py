"""``sockdebug-agent``: ss-compatible flags in, JSON Lines out.

    sockdebug-agent [--netns NAME|PATH | --target-pid PID] sockets [-tuwx46alpoemi] [state S] [FILTER]
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] summary
    sockdebug-agent --version

Every run prints ``hello`` first and ``end`` last; failures become an ``error`` record,
a line on stderr and a non-zero exit code (errors.py), never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Optional

from . import __version__, namespaces
from .errors import EXIT_AGENT, EXIT_OK, EXIT_USAGE, AgentError, UsageError
from .filter import FilterError, select
from .stream import Writer

Command = Callable[[argparse.Namespace, Writer], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn
    return register


def _local_port_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = f.read().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 1024, 4999  # what ss assumes when the file is unreadable


def selection_from_args(args: argparse.Namespace):
    try:
        return select(tcp=args.tcp, udp=args.udp, raw=args.raw, unix=args.unix, ipv4=args.ipv4,
                      ipv6=args.ipv6, all_states=args.all, listening=args.listening, words=args.filter,
                      local_port_range=_local_port_range())
    except FilterError as exc:
        words = list(args.filter)
        where = ""
        if exc.position is not None and exc.position < len(words):
            marked = [f">>{w}<<" if i == exc.position else w for i, w in enumerate(words)]
            where = f" (word {exc.position + 1}: {' '.join(marked)})"
        elif exc.position is not None:
            where = f" (after the last word: {' '.join(words)} >><<)"
        elif exc.word is not None:
            where = f" (at '{exc.word}')"
        raise UsageError(f"invalid filter: {exc}{where}",
                         "see ss(8): state NAME ... [src|dst HOST] [sport|dport OP PORT] and/or/not ( )"
                         ) from None


@command("sockets")
def run_sockets(args: argparse.Namespace, out: Writer) -> int:
    from .inspectors.sockets import Details, collect

    sel = selection_from_args(args)
    details = Details(processes=args.processes, timers=args.options or args.extended,
                      extended=args.extended, memory=args.memory, info=args.info)
    for batch in collect(sel, details, out.emit):
        out.emit_batch(batch)
    return EXIT_OK


@command("summary")
def run_summary(args: argparse.Namespace, out: Writer) -> int:
    from .inspectors.sockets import Details, collect_all
    from .inspectors.summary import collect_summary, read_counters

    counters = read_counters()  # first: the dump's own netlink socket would be counted
    states: Counter[str] = Counter()
    udp = unix = 0
    for sock in collect_all(select(all_states=True), Details(), out.emit):
        if sock.netid == "tcp":
            states[sock.state] += 1
        elif sock.netid == "udp":
            udp += 1
        elif sock.family == "unix":
            unix += 1
    out.emit(collect_summary(states, udp, unix, counters))
    return EXIT_OK


def _add_socket_flags(p: argparse.ArgumentParser) -> None:
    flag = p.add_argument
    flag("-t", "--tcp", action="store_true", help="TCP sockets")
    flag("-u", "--udp", action="store_true", help="UDP sockets")
    flag("-w", "--raw", action="store_true", help="RAW sockets")
    flag("-x", "--unix", action="store_true", help="unix domain sockets")
    flag("-4", "--ipv4", action="store_true", help="IPv4 only")
    flag("-6", "--ipv6", action="store_true", help="IPv6 only")
    flag("-a", "--all", action="store_true", help="listening and non-listening sockets")
    flag("-l", "--listening", action="store_true", help="listening sockets only")
    flag("-p", "--processes", action="store_true", help="owning processes (pid, comm, fd)")
    flag("-o", "--options", action="store_true", help="timers")
    flag("-e", "--extended", action="store_true", help="details (implies -o)")
    flag("-m", "--memory", action="store_true", help="socket memory (skmem)")
    flag("-i", "--info", action="store_true", help="TCP internals (tcp_info)")
    flag("-n", "--numeric", action="store_true", help="accepted for ss habits; output is always numeric")
    flag("-H", "--no-header", action="store_true", help="accepted for ss habits; JSON has no header")
    flag("filter", nargs="*", metavar="[state S | exclude S] ... FILTER",
         help="ss state words and filter expression, e.g. state established '( dport = :443 )'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sockdebug-agent",
        description="ss-grade socket inspection of any network namespace, as JSON Lines.")
    parser.add_argument("--version", action="version", version=f"sockdebug-agent {__version__}")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--netns", metavar="NAME|PATH",
                        help="inspect this network namespace (ip netns name, or an nsfs path)")
    target.add_argument("--target-pid", type=int, metavar="PID",
                        help="inspect the network namespace of this process (like nsenter --net)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_socket_flags(sub.add_parser("sockets", help="list sockets, like ss"))
    sub.add_parser("summary", help="socket totals and TCP state counts, like ss -s")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Die quietly like ss when the reader goes away (| head).
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage or --help/--version
        return int(exc.code or 0) and EXIT_USAGE
    out = Writer()
    command_line = ["sockdebug-agent", *argv]
    try:
        path = namespaces.netns_path(args.netns, args.target_pid)
        if path is not None:
            namespaces.enter(path)
        out.hello(command_line)
        code = COMMANDS[args.command](args, out)
    except AgentError as exc:
        code = exc.exit_code
        _fail(out, command_line, exc.code, exc.message, exc.hint)
    except Exception as exc:  # last resort: a record and one line, no traceback
        code = EXIT_AGENT
        _fail(out, command_line, "internal", f"{type(exc).__name__}: {exc}",
              "please report this with the command line and `uname -r`")
    out.end(code)
    return code


def _fail(out: Writer, command_line: list[str], code: str, message: str, hint: Optional[str]) -> None:
    if not out.counts["hello"]:  # the stream is always framed, even when entering the netns failed
        out.hello(command_line)
    out.error(code, message, hint)
    print(f"sockdebug-agent: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
