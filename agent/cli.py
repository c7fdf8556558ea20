"""``sockdebug-agent``: ss-compatible flags in, JSON Lines out (tables on a terminal).

    sockdebug-agent [--netns NAME|PATH | --target-pid PID] sockets [-tuwx46alpoemi] [state S] [FILTER]
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] summary
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] routes | interfaces
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] limits [--all-processes]
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] triage [--fail-on SEVERITY] [--sockets]
    sockdebug-agent [--netns NAME|PATH | --target-pid PID] events [-tu46pi] [--for D] [--count N] [FILTER]
    sockdebug-agent pods [-tulp ...]     (on a node, hostPID: every pod's network namespace, once each)
    sockdebug-agent serve [--idle-timeout SECONDS] | stop   (the plugin's reusable agent, and its end)
    sockdebug-agent --psutil sockets|limits ...   (the portable path, automatic off Linux)
    sockdebug-agent --version

Every run prints ``hello`` first and ``end`` last; failures become an ``error`` record,
a line on stderr and a non-zero exit code (errors.py), never a traceback.
"""

from __future__ import annotations

import _signal  # signal without its enums (3 M instructions of every run; design.md, Start-up)
import argparse
import errno
import gc
import os
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
from .filter import select
from .netlink import NetlinkError
from .query import Query, add_commands
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
    """The parsed command line's Selection (query.py: one contract with the plugin)."""
    return Query.from_args(args).selection(_local_port_range())


@command("sockets")
def run_sockets(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    from .inspectors.sockets import Details

    details = Details(processes=args.processes, timers=args.options or args.extended,
                      extended=args.extended, memory=args.memory, info=args.info)
    for batch in backend.sockets(selection_from_args(args), details, out.emit, lines=out.takes_lines):
        out.emit_batch(batch)
    return EXIT_OK


@command("serve")
def run_serve(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    serve.run(args.idle_timeout)
    return EXIT_OK


@command("stop")
def run_stop(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    """End this container's serve process, once this stream is complete (``main``)."""
    pids = serve.own_serve()
    if not pids:
        out.warning("not-serving", "no serve process of this container is running: nothing to stop")
    serve.stop_after_end(pids)
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


@command("ids")
def run_ids(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    from .inspectors.processes import scan_ids

    if isinstance(backend, Linux):  # always: `ids` is Linux-only (backend.LINUX_ONLY)
        backend.require_proc("ids")
    for record in scan_ids():
        out.emit(record)
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


# --- events (agent/inspectors/events.py): ss -E, one record per destroyed socket ----------

@command("events")
def run_events(args: argparse.Namespace, out: Writer, backend: Backend) -> int:
    from .inspectors import events

    query = Query.from_args(args).check()
    return events.run(events.options(query, query.selection(_local_port_range())), out)


class _UsageExit(UsageError):
    """An argparse usage error (its usage text already on stderr), for a framed stream."""

    reported = True


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's own, with the width shutil.get_terminal_size would give (COLUMNS, else the
    terminal of stdout, else 80) found without importing shutil, which with its
    compression modules costs about 3 ms of every run: argparse makes a formatter for each
    argument it adds, to check its metavar, though only --help and usage errors print."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None) -> None:
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with the agent's output rules, whose arguments may be added on
    first use (``later``): a run needs those of one command, and adding every command's
    cost about 5 ms of each run's start-up."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._later: list[Callable[[argparse.ArgumentParser], None]] = []

    def later(self, fill: Callable[[argparse.ArgumentParser], None]) -> None:
        """Run ``fill(self)`` (add arguments) before this parser first parses or prints."""
        self._later.append(fill)

    def _filled(self) -> None:
        while self._later:
            self._later.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):  # the subparsers action calls this
        self._filled()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._filled()
        return super().format_usage()

    def format_help(self) -> str:
        self._filled()
        return super().format_help()

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


class _CommandParser:
    """A command's parser, made when first used: argparse's subparsers action keeps one per
    command (``parser_class``), but a run parses with one, and making the others (argparse
    adds -h to each, with gettext and a help formatter) cost about 8 M instructions of
    every run.  Until then only ``later`` is answered here; any other attribute (parsing,
    --help, usage, the tests' look inside) is the real parser's, made then."""

    def __init__(self, **kwargs) -> None:
        self._kwargs = kwargs
        self._fills: list[Callable[[argparse.ArgumentParser], None]] = []
        self.made: Optional[_ArgumentParser] = None

    def later(self, fill: Callable[[argparse.ArgumentParser], None]) -> None:
        """``_ArgumentParser.later`` of the parser to be made."""
        if self.made is None:
            self._fills.append(fill)
        else:
            self.made.later(fill)

    def __getattr__(self, name: str):  # only for names this class does not have
        if self.made is None:
            self.made = _ArgumentParser(**self._kwargs)
            for fill in self._fills:
                self.made.later(fill)
        return getattr(self.made, name)


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
        description="ss-grade socket inspection of any network namespace: tables on a terminal, JSON Lines "
                    "otherwise.")
    parser.add_argument("--version", action="version", version=f"sockdebug-agent {__version__}")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--netns", metavar="NAME|PATH",
                        help="inspect this network namespace (ip netns name, or an nsfs path)")
    target.add_argument("--target-pid", type=_pid, metavar="PID",
                        help="inspect the network namespace of this process (like nsenter --net)")
    parser.add_argument("--psutil", action="store_true",
                        help="read sockets and limits through psutil, as off Linux (for testing that path)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    # Each command's parser is made, and its arguments added, when first used (_CommandParser).
    add_commands(sub, defer=_CommandParser.later)  # sockets, summary, ...: declared once, with the plugin's Query
    serve = sub.add_parser("serve", help="stay alive for queries exec'd next to it (the plugin's ephemeral "
                           "container); exit after --idle-timeout seconds without one")
    serve.later(lambda p: p.add_argument("--idle-timeout", type=_seconds, default=900, metavar="SECONDS"))
    sub.add_parser("stop", help="end the serve process of this container (exec'd next to it, as the plugin's "
                   "`stop` does); the container then ends")
    parser.add_argument("-o", "--output", choices=OUTPUTS, help="table (the default on a terminal: the plugin's "
                        "tables) or jsonl (the default otherwise: one JSON record a line); after COMMAND, --output")
    for p in sub.choices.values():  # after `sockets`, -o is ss's timers flag
        p.later(_add_output_after_command)
    return parser


def _add_output_after_command(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", choices=OUTPUTS, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


OUTPUTS = ("table", "jsonl")


def writer(argv: Sequence[str]) -> Writer:
    """Where records go, chosen here only and before the arguments are parsed (a usage
    error is framed too): tables for a person (-o table, or stdout a terminal), JSON
    Lines for programs (-o jsonl, or anything else).  ``events`` writes JSON Lines always:
    the tables are printed at ``end``, and a follow stream has no end to wait for."""
    output, command = _scan(argv)
    if command == "events":
        return Writer()
    if output == "table" or (output is None and os.isatty(1)):
        from .render import TableWriter

        return TableWriter(argv)
    return Writer()


def output_choice(argv: Sequence[str]) -> Optional[str]:
    """-o/--output before COMMAND, --output after it (there -o is ss's timers flag); None
    when not given or not a choice (argparse then says why)."""
    return _scan(argv)[0]


def _scan(argv: Sequence[str]) -> tuple[Optional[str], Optional[str]]:
    """``output_choice``, and the COMMAND word: the first word that is no option (None: none)."""
    choice, words, command = None, iter(argv), None
    for word in words:
        in_command = command is not None
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
        elif not word.startswith("-") and not in_command:
            command = word
    return (choice if choice in OUTPUTS else None), command


def main(argv: Optional[Sequence[str]] = None) -> int:
    # A short-lived process that builds tens of thousands of records and makes no
    # reference cycles worth collecting: the cyclic GC only costs time (up to a third
    # of a 40k-socket dump) and reference counting frees everything anyway.
    gc.disable()
    sys.unraisablehook = faults.ignore_unraisable  # cleanup after a failure never prints a traceback
    closed = faults.reserve_std_fds()  # before anything opens a file that would take fd 1
    argv = list(sys.argv[1:] if argv is None else argv)
    out = writer(argv)
    _signal.signal(_signal.SIGINT, out.on_sigint)  # Ctrl-C ends the stream after a whole line
    # Die quietly like ss when the reader goes away (| head).  Python ignored SIGPIPE at
    # start, which erases an inherited SIG_IGN too; a blocked SIGPIPE still gives EPIPE.
    if hasattr(_signal, "SIGPIPE"):  # not on Windows
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
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
    code = _finish(out, command_line, code, error)
    serve.send_pending()  # `stop`: the serve process ends after the stream is out
    return code


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
    if os.environ.get(serve.SERVE_ENV) and args.command not in ("serve", "stop"):
        serve.keep_alive()
    return COMMANDS[args.command](args, out, backend)


def _finish(out: Writer, command_line: list[str], code: int, error: Optional[SockdebugError]) -> int:
    """The error record and ``end`` while stdout works, the error on stderr; the exit code."""
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # the closing records are written whole
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


def run() -> None:
    """The console script and ``python -m``: ``main``, then exit without the interpreter's
    teardown, which frees every module and object one by one (about 5 ms of a run that
    prints 10,000 sockets in 60; bench/results/sockets_profile.md)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):  # what print() left in a buffer (--help, messages)
        if stream is None:  # started with the fd closed: Python has no stream for it
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a reader gone: the exit code still tells
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
