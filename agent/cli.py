"""``sockdebug-agent``: ss-compatible flags in, JSON Lines out (tables on a terminal).

    sockdebug-agent [--netns NAME|PATH | --target-pid PID] sockets [-tuwx46alpoemi] [state S] [FILTER]
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] summary
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] routes | interfaces
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] limits [--all-processes]
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] triage [--fail-on SEVERITY] [--sockets]
    sockdebug-agent pods [-tulp ...]     (on a node, hostPID: every pod's network namespace, once each)
    sockdebug-agent --psutil sockets|limits ...   (the portable path, automatic off Linux)
    sockdebug-agent --version

Every run prints ``hello`` first and ``end`` last; failures become an ``error`` record,
a line on stderr and a non-zero exit code (errors.py), never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Optional

from . import __version__, namespaces, serve
from .errors import EXIT_AGENT, EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, KernelError, SockdebugError, UsageError
from .filter import select
from .netlink import NetlinkError, ProtocolError
from .query import Query, add_commands
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
    """The parsed command line's Selection (query.py: one contract with the plugin)."""
    return Query.from_args(args).selection(_local_port_range())


@command("sockets")
def run_sockets(args: argparse.Namespace, out: Writer) -> int:
    from .inspectors.sockets import Details, collect

    sel = selection_from_args(args)
    if portable_path(args):
        from .inspectors import portable

        found = portable.collect_sockets(sel, args.processes, out.emit)
        if found:
            out.emit_batch(found)
        return EXIT_OK
    details = Details(processes=args.processes, timers=args.options or args.extended,
                      extended=args.extended, memory=args.memory, info=args.info)
    for batch in collect(sel, details, out.emit, lines=out.takes_lines):
        out.emit_batch(batch)
    return EXIT_OK


@command("serve")
def run_serve(args: argparse.Namespace, out: Writer) -> int:
    serve.run(args.idle_timeout)
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


def portable_path(args: argparse.Namespace) -> bool:
    """psutil instead of netlink and /proc: off Linux, or when --psutil forces it."""
    return bool(getattr(args, "psutil", False)) or not sys.platform.startswith("linux")


def _linux_only(args: argparse.Namespace) -> None:
    if portable_path(args):
        raise UsageError(f"`{args.command}` reads rtnetlink and /proc, which exist only on Linux "
                         "(and not with --psutil)", "on other systems only `sockets` and `limits` work")


def _warn_denied(out: Writer, denied: list[int]) -> None:
    if denied:
        out.warning("process-limits-denied",
                    f"could not read the open files or network namespace of {len(denied)} processes "
                    f"(pids {', '.join(map(str, denied[:10]))}{', ...' if len(denied) > 10 else ''}): "
                    "they have no process_limits record. Run as root with CAP_SYS_PTRACE.", len(denied))


@command("routes")
def run_routes(args: argparse.Namespace, out: Writer) -> int:
    from .inspectors import routes

    _linux_only(args)
    for route in routes.collect():
        out.emit(route)
    return EXIT_OK


@command("interfaces")
def run_interfaces(args: argparse.Namespace, out: Writer) -> int:
    from .inspectors import interfaces

    _linux_only(args)
    for link in interfaces.collect():
        out.emit(link)
    return EXIT_OK


@command("limits")
def run_limits(args: argparse.Namespace, out: Writer) -> int:
    if portable_path(args):
        from .inspectors import portable

        out.emit(portable.missing_warning("limits", portable.MISSING_LIMITS_FIELDS))
        for record in portable.collect_process_limits(out.emit):
            out.emit(record)
        out.emit(portable.collect_limits())
        return EXIT_OK
    from .inspectors import limits
    from .inspectors.sockets import Details, collect_all

    scan = limits.collect_process_limits(all_netns=args.all_processes)
    _warn_denied(out, scan.denied)
    for record in scan.records:
        out.emit(record)
    sockets = collect_all(select(tcp=True, udp=True, all_states=True), Details(), out.emit)
    out.emit(limits.collect_limits(sockets))
    return EXIT_OK


@command("triage")
def run_triage(args: argparse.Namespace, out: Writer) -> int:
    from . import triage
    from .inspectors import interfaces, limits, routes
    from .inspectors.sockets import Details, collect_all
    from .inspectors.summary import collect_summary, read_counters
    from .netlink import NETLINK_ROUTE, Netlink

    _linux_only(args)
    counters = read_counters()
    sockets = collect_all(select(all_states=True),
                          Details(processes=True, timers=True, memory=True, info=True), out.emit)
    states = Counter(s.state for s in sockets if s.netid == "tcp")
    udp = sum(1 for s in sockets if s.netid == "udp")
    unix = sum(1 for s in sockets if s.family == "unix")
    data = triage.TriageInput(sockets=sockets, summary=collect_summary(states, udp, unix, counters),
                              host=args.host)
    try:
        with Netlink(NETLINK_ROUTE) as nl:
            data.interfaces = interfaces.collect(nl)
            data.routes = routes.collect(nl, {i.index: i.name for i in data.interfaces})
    except OSError as exc:
        out.warning("rtnetlink-unavailable", f"routes and interfaces could not be read ({exc}): "
                    "the route findings were not checked")
    scan = limits.collect_process_limits()
    _warn_denied(out, scan.denied)
    data.processes = scan.records
    data.limits = limits.collect_limits(sockets)
    findings = triage.triage(data)
    for record in (*findings, data.summary, data.limits, *scan.records, *(data.routes or ()),
                   *(data.interfaces or ())):
        out.emit(record)
    if args.sockets and sockets:
        out.emit_batch(sockets)
    if args.fail_on != "never" and triage.at_or_above(findings, args.fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


@command("pods")
def run_pods(args: argparse.Namespace, out: Writer) -> int:
    from .inspectors import podns
    from .inspectors.sockets import Details, collect_all

    _linux_only(args)
    if args.netns or args.target_pid is not None:
        raise UsageError("`pods` enters every pod's network namespace itself", "drop --netns / --target-pid")
    sel = selection_from_args(args)
    details = Details(timers=args.options or args.extended, extended=args.extended, memory=args.memory,
                      info=args.info)  # owners come from one walk of every process, not one per namespace
    for record, sockets in podns.collect(lambda: collect_all(sel, details, out.emit), args.processes, out.emit):
        out.emit(record)
        if sockets:
            out.emit_batch(sockets)
    return EXIT_OK


class _UsageExit(Exception):
    """An argparse usage error (already printed to stderr), for a framed stream."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise _UsageExit(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="sockdebug-agent",
        description="ss-grade socket inspection of any network namespace: tables on a terminal, JSON Lines "
                    "otherwise.")
    parser.add_argument("--version", action="version", version=f"sockdebug-agent {__version__}")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--netns", metavar="NAME|PATH",
                        help="inspect this network namespace (ip netns name, or an nsfs path)")
    target.add_argument("--target-pid", type=int, metavar="PID",
                        help="inspect the network namespace of this process (like nsenter --net)")
    parser.add_argument("--psutil", action="store_true",
                        help="read sockets and limits through psutil, as off Linux (for testing that path)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(sub)  # sockets, summary, routes, ...: declared once, with the plugin's Query
    serve = sub.add_parser("serve", help="stay alive for queries exec'd next to it (the plugin's ephemeral "
                           "container); exit after --idle-timeout seconds without one")
    serve.add_argument("--idle-timeout", type=float, default=900, metavar="SECONDS")
    parser.add_argument("-o", "--output", choices=OUTPUTS, help="table (the default on a terminal: the plugin's "
                        "tables) or jsonl (the default otherwise: one JSON record a line); after COMMAND, --output")
    for p in sub.choices.values():  # after `sockets`, -o is ss's timers flag
        p.add_argument("--output", choices=OUTPUTS, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


OUTPUTS = ("table", "jsonl")


def writer(argv: Sequence[str]) -> Writer:
    """Where records go, chosen here only and before the arguments are parsed (a usage
    error is framed too): tables for a person (-o table, or stdout a terminal), JSON
    Lines for programs (-o jsonl, or anything else)."""
    output = output_choice(argv)
    if output == "table" or (output is None and os.isatty(1)):
        from .render import TableWriter

        return TableWriter(argv)
    return Writer()


def output_choice(argv: Sequence[str]) -> Optional[str]:
    """-o/--output before COMMAND, --output after it (there -o is ss's timers flag); None
    when not given or not a choice (argparse then says why)."""
    choice, words, in_command = None, iter(argv), False
    for word in words:
        if word == "--":
            break
        if word == "--output" or (word == "-o" and not in_command):
            choice = next(words, None)
        elif word.startswith("--output="):
            choice = word[len("--output="):]
        elif word.startswith("-o") and not in_command:
            choice = word[2:]
        elif word in ("--netns", "--target-pid") and not in_command:
            next(words, None)
        elif not word.startswith("-"):
            in_command = True
    return choice if choice in OUTPUTS else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    # A short-lived process that builds tens of thousands of records and makes no
    # reference cycles worth collecting: the cyclic GC only costs time (up to a third
    # of a 40k-socket dump) and reference counting frees everything anyway.
    gc.disable()
    # Die quietly like ss when the reader goes away (| head).
    if hasattr(signal, "SIGPIPE"):  # not on Windows
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    command_line = ["sockdebug-agent", *argv]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed --help/--version
        return int(exc.code or 0) and EXIT_USAGE
    except _UsageExit as exc:  # bad flags: usage on stderr, and still a framed stream on stdout
        out = writer(argv)
        out.hello(command_line)
        out.error("usage", str(exc), "see sockdebug-agent --help")
        out.end(EXIT_USAGE)
        return EXIT_USAGE
    out = writer(argv)
    try:
        path = namespaces.netns_path(args.netns, args.target_pid)
        if path is not None:
            namespaces.enter(path)
        out.hello(command_line)
        if os.environ.get(serve.SERVE_ENV) and args.command != "serve":
            serve.keep_alive()
        code = COMMANDS[args.command](args, out)
    except SockdebugError as exc:
        code = exc.exit_code
        _fail(out, command_line, exc.code, exc.cause, exc.hint)
    except (NetlinkError, ProtocolError) as exc:
        code = KernelError.exit_code
        _fail(out, command_line, KernelError.code, f"the kernel's netlink answer could not be used: {exc}",
              "run again; if it persists, report it with `uname -r` and the command line")
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


def run() -> None:
    """The console script and ``python -m``: ``main``, then exit without the interpreter's
    teardown, which frees every module and object one by one (about 5 ms of a run that
    prints 10,000 sockets in 60; bench/results/sockets_profile.md)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):  # what print() left in a buffer (--help, messages)
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader gone: the exit code still tells
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
