"""``sockdebug-agent``: ss-compatible flags in, JSON Lines out.

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
import errno
import gc
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Optional

from . import __version__, faults, namespaces, serve
from .backend import Backend, Linux, choose, summarise
from .errors import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_USAGE,
    KernelError,
    OutputError,
    SockdebugError,
    UsageError,
)
from .filter import FilterError, select
from .netlink import NetlinkError
from .stream import Writer

PID_MAX = 1 << 22  # PID_MAX_LIMIT: no pid is larger
Command = Callable[[argparse.Namespace, Writer, Backend], int]
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
                      preferred_family=getattr(args, "preferred_family", None),
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
def run_sockets(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    from .inspectors.sockets import Details

    details = Details(processes=args.processes, timers=args.options or args.extended,
                      extended=args.extended, memory=args.memory, info=args.info)
    for batch in backend.sockets(selection_from_args(args), details, out.emit):
        out.emit_batch(batch)
    return EXIT_OK


@command("serve")
def run_serve(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    serve.run(args.idle_timeout)
    return EXIT_OK


@command("summary")
def run_summary(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    out.emit(backend.summary(out.emit))
    return EXIT_OK


@command("routes")
def run_routes(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    from .inspectors import routes

    with backend.rtnetlink() as nl:
        found = routes.collect(nl)
    for route in found:
        out.emit(route)
    return EXIT_OK


@command("interfaces")
def run_interfaces(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    from .inspectors import interfaces

    with backend.rtnetlink() as nl:
        found = interfaces.collect(nl)
    for link in found:
        out.emit(link)
    return EXIT_OK


@command("limits")
def run_limits(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    if isinstance(backend, Linux):
        backend.require_proc("limits")
    for record in backend.process_limits(out.emit, all_netns=args.all_processes):
        out.emit(record)
    out.emit(backend.limits(out.emit))
    return EXIT_OK


@command("triage")
def run_triage(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    from . import triage
    from .inspectors import interfaces, routes
    from .inspectors.sockets import Details
    from .inspectors.summary import read_counters

    backend.warn_no_proc(out.emit, "no owners, process limits, counters or sysctls: the findings that need "
                         "them were not checked")
    counters = read_counters()
    sockets = [s for batch in backend.sockets(select(all_states=True),
                                              Details(processes=True, timers=True, memory=True, info=True), out.emit)
               for s in batch]
    data = triage.TriageInput(sockets=sockets, summary=summarise(sockets, counters), host=args.host)
    try:
        with backend.rtnetlink() as nl:
            data.interfaces = interfaces.collect(nl)
            data.routes = routes.collect(nl, {i.index: i.name for i in data.interfaces})
    except (KernelError, NetlinkError) as exc:
        why = exc.message if isinstance(exc, KernelError) else f"routes and interfaces could not be read ({exc})"
        out.warning("rtnetlink-unavailable", f"{why}: the route findings were not checked")
    data.processes = backend.process_limits(out.emit)
    data.limits = backend.limits(out.emit, sockets)
    findings = triage.triage(data)
    for record in (*findings, data.summary, data.limits, *data.processes, *(data.routes or ()),
                   *(data.interfaces or ())):
        out.emit(record)
    if args.sockets and sockets:
        out.emit_batch(sockets)
    if args.fail_on != "never" and triage.at_or_above(findings, args.fail_on):
        return EXIT_FINDINGS
    return EXIT_OK


@command("pods")
def run_pods(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    from .inspectors import podns
    from .inspectors.sockets import Details, collect_all

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


def _add_inspection_commands(sub) -> None:
    sub.add_parser("routes", help="every route of every table, IPv4 and IPv6 (ip route show table all)")
    sub.add_parser("interfaces", help="links and their addresses (ip -d addr)")
    p = sub.add_parser("limits", help="open fds against their limits, kernel limits and pressure counters")
    p.add_argument("--all-processes", action="store_true",
                   help="every visible process, not only those in the inspected network namespace")
    p = sub.add_parser("triage", help="findings in plain language, most severe first, then the figures")
    p.add_argument("--fail-on", choices=("critical", "warning", "info", "never"), default="never",
                   help="exit 1 when a finding is at least this severe (default: never)")
    p.add_argument("--sockets", action="store_true", help="also emit every socket record")
    p.add_argument("--host", action="store_true",
                   help="this is a node's own network namespace: loopback-only listeners are its daemons' "
                        "normal choice (kubelet, etcd), not a finding")


class _FamilyFlag(argparse.Action):
    """store_true that also remembers the last family flag given: ss parses the
    addresses and ports of a filter in that family (``-x``: unix name patterns)."""

    def __init__(self, option_strings, dest, family: str, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)
        self.family = family

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        namespace.preferred_family = self.family


def _add_socket_flags(p: argparse.ArgumentParser) -> None:
    flag = p.add_argument
    flag("-t", "--tcp", action="store_true", help="TCP sockets")
    flag("-u", "--udp", action="store_true", help="UDP sockets")
    flag("-w", "--raw", action="store_true", help="RAW sockets")
    flag("-x", "--unix", action=_FamilyFlag, family="unix", help="unix domain sockets")
    flag("-4", "--ipv4", action=_FamilyFlag, family="inet", help="IPv4 only")
    flag("-6", "--ipv6", action=_FamilyFlag, family="inet6", help="IPv6 only")
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


class _UsageExit(UsageError):
    """An argparse usage error (its usage text already on stderr), for a framed stream."""

    reported = True


class _ArgumentParser(argparse.ArgumentParser):
    def _print_message(self, message: str, file=None) -> None:  # --help, --version: argparse swallows failures
        if not message:
            return
        if file is None or file is sys.stdout:
            data = message.encode("utf-8", "backslashreplace")
            try:
                while data:
                    data = data[os.write(1, data):]
            except OSError as exc:
                raise faults.output_error(exc) from None
        else:
            for line in message.rstrip("\n").split("\n"):
                faults.stderr_line(line)

    def error(self, message: str):  # type: ignore[override]
        for line in self.format_usage().rstrip("\n").split("\n"):
            faults.stderr_line(line)
        faults.stderr_line(f"{self.prog}: error: {message}")
        raise _UsageExit(message, "see sockdebug-agent --help")


def _ascii_number(pattern: str, what: str) -> Callable[[str], str]:
    """ASCII digits only, as ss reads numbers: int() and float() would take any script's
    digits (``٣``), ``1_000`` and surrounding blanks."""
    import re

    shape = re.compile(pattern)

    def check(word: str) -> str:
        if not shape.fullmatch(word):
            raise argparse.ArgumentTypeError(f"{what}, not {word!r}")
        return word
    return check


def _pid(word: str) -> int:
    pid = int(_ascii_number(r"[0-9]{1,10}", "a pid is a number of ASCII digits")(word))
    if not 0 < pid <= PID_MAX:
        raise argparse.ArgumentTypeError(f"a pid is between 1 and {PID_MAX}, not {word}")
    return pid


def _seconds(word: str) -> float:
    value = float(_ascii_number(r"[0-9]{1,9}(\.[0-9]{1,9})?", "a timeout is a number of seconds in ASCII digits "
                                "(e.g. 900 or 0.5), finite and positive")(word))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a timeout is more than 0 seconds, not {word}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="sockdebug-agent",
        description="ss-grade socket inspection of any network namespace, as JSON Lines.")
    parser.add_argument("--version", action="version", version=f"sockdebug-agent {__version__}")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--netns", metavar="NAME|PATH",
                        help="inspect this network namespace (ip netns name, or an nsfs path)")
    target.add_argument("--target-pid", type=_pid, metavar="PID",
                        help="inspect the network namespace of this process (like nsenter --net)")
    parser.add_argument("--psutil", action="store_true",
                        help="read sockets and limits through psutil, as off Linux (for testing that path)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_socket_flags(sub.add_parser("sockets", help="list sockets, like ss"))
    _add_socket_flags(sub.add_parser("pods", help="on a node (host PID namespace, root): a netns record per pod "
                                     "network namespace (found through /proc/PID/cgroup), then its sockets"))
    sub.add_parser("summary", help="socket totals and TCP state counts, like ss -s")
    serve = sub.add_parser("serve", help="stay alive for queries exec'd next to it (the plugin's ephemeral "
                           "container); exit after --idle-timeout seconds without one")
    serve.add_argument("--idle-timeout", type=_seconds, default=900, metavar="SECONDS")
    _add_inspection_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # A short-lived process that builds tens of thousands of records and makes no
    # reference cycles worth collecting: the cyclic GC only costs time (up to a third
    # of a 40k-socket dump) and reference counting frees everything anyway.
    gc.disable()
    sys.unraisablehook = faults.ignore_unraisable  # cleanup after a failure never prints a traceback
    closed = faults.reserve_std_fds()  # before anything opens a file that would take fd 1
    out = Writer()
    signal.signal(signal.SIGINT, out.on_sigint)  # Ctrl-C ends the stream after a whole line
    # Die quietly like ss when the reader goes away (| head).  Python ignored SIGPIPE at
    # start, which erases an inherited SIG_IGN too; a blocked SIGPIPE still gives EPIPE.
    if hasattr(signal, "SIGPIPE"):  # not on Windows
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = list(sys.argv[1:] if argv is None else argv)
    command_line = ["sockdebug-agent", *argv]
    code, error = EXIT_OK, None
    try:
        if 1 in closed:
            raise faults.output_error(OSError(errno.EBADF, os.strerror(errno.EBADF)))
        code = _run(argv, command_line, out)
    except BaseException as exc:  # every failure: a record and a line on stderr, no traceback
        if isinstance(exc, SystemExit):
            raise
        error = faults.classify(exc)
        code = error.exit_code
    return _finish(out, command_line, code, error)


def _run(argv: list[str], command_line: list[str], out: Writer) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed --help/--version
        return int(exc.code or 0) and EXIT_USAGE
    backend = choose(args.psutil)
    path = namespaces.netns_path(args.netns, args.target_pid)
    if path is not None:
        namespaces.enter(path)
    out.hello(command_line)
    if args.command not in backend.commands:
        raise backend.unsupported(args.command)
    if os.environ.get(serve.SERVE_ENV) and args.command != "serve":
        serve.keep_alive()
    return COMMANDS[args.command](args, out, backend)


def _finish(out: Writer, command_line: list[str], code: int, error: Optional[SockdebugError]) -> int:
    """The error record and ``end`` while stdout works, the error on stderr; the exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the closing records are written whole
    if error is not None and not isinstance(error, OutputError) and not getattr(error, "reported", False):
        faults.stderr_line(f"sockdebug-agent: {error.message}")
        if error.hint:
            faults.stderr_line(f"hint: {error.hint}")
    try:
        if out.broken is None and not isinstance(error, OutputError) and (error is not None or out.counts["hello"]):
            if not out.counts["hello"]:  # the stream is always framed, even when entering the netns failed
                out.hello(command_line)
            if error is not None:
                out.error(error.code, error.message, error.hint)
            out.end(code)
    except (OutputError, MemoryError):  # nothing more can be written: stderr and the exit code still say it
        pass
    broken = out.broken or (error if isinstance(error, OutputError) else None)
    if broken is not None:
        faults.stderr_line(f"sockdebug-agent: {broken.message}")
        faults.silence_stdout()
        if error is None or error is broken:  # else the failure that came first keeps its code
            code = EXIT_OUTPUT
    return code


if __name__ == "__main__":
    sys.exit(main())
