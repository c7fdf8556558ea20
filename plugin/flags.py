"""The command line, declared once: every command's arguments and flags in one table,
and the parser that reads ``argv`` with it.

The same table renders ``--help`` through typer (``helptext.py``), feeds completion
(``complete.py``) and names the choice sets of ``choices.py``.  The parser follows
click's rules (options anywhere among the arguments, ``--name=value``, ``-nVALUE``,
bundled short flags ``-tlp``, ``--`` ends the options, no prefix matching) and its
messages, but it is plain Python: typer's own parsing imports pydantic (~0.15 s here),
more than a whole warm query may take.  Values get their type here; choice sets and
combinations are checked in ``options.py`` (complete -> validate), before any API call.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

from . import choices
from .errors import UsageError
from .inject import IDLE_TIMEOUT_S

HELP_NAMES = ("-h", "--help")
HELP_HINT = "see `kubectl sockdebug --help`"


class Flag(NamedTuple):
    """One option: ``type`` is bool (a switch), str, int or float."""

    dest: str
    names: tuple[str, ...]
    type: type
    default: Any
    help: str
    off: tuple[str, ...] = ()  #: names that turn a switch off (``-P``, ``--no-processes``)
    choices: Optional[tuple[str, ...]] = None
    metavar: Optional[str] = None
    show_default: bool = True


class Arg(NamedTuple):
    dest: str
    help: str
    required: bool = False
    many: bool = False  #: takes every remaining argument


class Command(NamedTuple):
    name: str
    doc: str
    args: tuple[Arg, ...]
    flags: tuple[Flag, ...]
    epilog: Optional[str] = None

    def flag(self, dest: str) -> Flag:
        return next(f for f in self.flags if f.dest == dest)


class Help(NamedTuple):
    """``-h``/``--help`` was given: show the command's help, run nothing."""

    command: str


class Parsed(NamedTuple):
    command: str
    values: dict[str, Any]  #: dest -> typed value, defaults for the rest
    order: tuple[str, ...] = ()  #: the switches turned on, in the order given (ss: the last family flag counts)


def _pipe(values: tuple[str, ...]) -> str:
    return "|".join(values)


# --- the table --------------------------------------------------------------------------------

NAMESPACE = Flag("namespace", ("-n", "--namespace"), str, None, "namespace (default: the context's)")
CONTEXT = Flag("context", ("--context",), str, None, "kubeconfig context")
KUBECONFIG = Flag("kubeconfig", ("--kubeconfig",), str, None, "kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
CONTAINER = Flag("container", ("-c", "--container"), str, None, "target container (default: the pod's default)")
IMAGE = Flag("image", ("--image",), str, None, "agent image (default: sockdebug-agent:VERSION)")
PULL = Flag("image_pull_policy", ("--image-pull-policy",), str, "IfNotPresent", _pipe(choices.PULL_POLICIES),
            choices=choices.PULL_POLICIES)
PROFILE = Flag("profile", ("--profile",), str, "auto",
               f"{_pipe(choices.PROFILES)}: the agent's security context", choices=choices.PROFILES)
TIMEOUT = Flag("timeout", ("--timeout",), float, 60.0, "seconds to wait for the agent to start and answer")
IDLE_TIMEOUT = Flag("idle_timeout", ("--idle-timeout",), float, float(IDLE_TIMEOUT_S),
                    "seconds an agent this run starts waits for its next query before it exits "
                    "(`kubectl sockdebug agents` shows it)")
FAIL_ON = Flag("fail_on", ("--fail-on",), str, None, "exit 1 on findings of this severity or worse "
               f"({_pipe(choices.SEVERITIES)})", choices=choices.SEVERITIES)
SELECTOR = Flag("selector", ("-l", "--selector"), str, None, "pods with these labels")
EVENTS_FOR = "30s"  #: how long --events follows without --for


def _switch(dest: str, names: tuple[str, ...], help: str) -> Flag:
    return Flag(dest, names, bool, False, help)


_TEMPLATE_ARGS = {"jsonpath": "TEMPLATE", "custom-columns": "SPEC"}


def _output(values: tuple[str, ...]) -> Flag:
    """``-o``: ``choices`` holds the plain formats; every command also takes kubectl's
    template formats (choices.TEMPLATE_OUTPUTS), which options.py parses."""
    templates = [f"{n}={_TEMPLATE_ARGS.get(n, 'FILE')}" for n in choices.TEMPLATE_OUTPUTS]
    return Flag("output", ("-o", "--output"), str, "table", _pipe((*values, *templates)), choices=values)


INSPECT_OUTPUT = _output(choices.INSPECT_OUTPUTS)
TRIAGE_OUTPUT = _output(choices.TRIAGE_OUTPUTS)
SWEEP_OUTPUT = _output(choices.SWEEP_OUTPUTS)
AGENTS_OUTPUT = _output(choices.AGENTS_OUTPUTS)
NO_HEADERS = Flag("no_headers", ("--no-headers",), bool, False,
                  "no header lines (table, wide, custom-columns), as kubectl's --no-headers")
SORT_BY = Flag("sort_by", ("--sort-by",), str, None, "sort the rows by this path within one row (a jsonpath, "
               "e.g. .local_port); numbers by value, as kubectl's --sort-by", metavar="PATH")
ALL_NAMESPACES = Flag("all_namespaces", ("-A", "--all-namespaces"), bool, False, "every namespace")
VIA = Flag("via", ("--via",), str, "ephemeral", "ephemeral: an agent container in each pod (reused when running); "
           "node: one short-lived privileged pod per node (or the node-agent DaemonSet), nothing added to the pods",
           choices=choices.VIAS)


EPILOG = ("Other commands: `kubectl sockdebug sweep --help` (cluster-wide port conflicts), "
          "`kubectl sockdebug triage --help` (findings first), `kubectl sockdebug agents` and `stop` (the agents "
          "it started).  ss habits: see README 'From ss to sockdebug'.")

#: ss's letters for the socket switches, in the order the agent receives them.
SOCKET_SWITCHES = (
    _switch("listening", ("--listening",), "listening sockets (ss -l)"),
    _switch("all_states", ("-a", "--all"), "listening and connected sockets (ss -a)"),
    _switch("tcp", ("-t", "--tcp"), "TCP (ss -t)"),
    _switch("udp", ("-u", "--udp"), "UDP (ss -u)"),
    _switch("unix", ("-x", "--unix"), "unix sockets (ss -x)"),
    _switch("raw", ("-w", "--raw"), "raw sockets (ss -w)"),
    _switch("ipv4", ("-4", "--ipv4"), "IPv4 only"),
    _switch("ipv6", ("-6", "--ipv6"), "IPv6 only"),
    Flag("processes", ("-p", "--processes"), bool, True, "owning process and container (ss -p); on by default",
         off=("-P", "--no-processes"), show_default=False),
    _switch("timers", ("--timers",), "timers (ss -o)"),
    _switch("extended", ("-e", "--extended"), "details (ss -e)"),
    _switch("memory", ("-m", "--memory"), "socket memory (ss -m)"),
    _switch("info", ("-i", "--info"), "TCP internals (ss -i)"),
)
VIEW_SWITCHES = (
    _switch("summary", ("-s", "--summary"), "totals and TCP state counts (ss -s)"),
    _switch("routes", ("--routes",), "every route of every table (routel)"),
    _switch("interfaces", ("--interfaces",), "links and addresses (ip addr)"),
    _switch("limits", ("--limits",), "fd use vs limits, kernel pressure figures"),
)

INSPECT = Command(
    "inspect",
    "What a pod really listens on and talks to: ss inside any pod, from an ephemeral agent container.",
    (Arg("target", "pod/NAME, NAME, deploy/, sts/, ds/, rs/, job/, svc/, node/"),
     Arg("words", "ss state words and filter: state established '(' dport = :443 ')'", many=True)),
    (NAMESPACE,
     ALL_NAMESPACES._replace(help="with -l: pods of every namespace"),
     SELECTOR,
     _switch("all_pods", ("--all-pods",), "every pod of a workload, not one"),
     CONTEXT, KUBECONFIG, CONTAINER, INSPECT_OUTPUT, NO_HEADERS, SORT_BY,
     *SOCKET_SWITCHES, *VIEW_SWITCHES,
     Flag("watch", ("--watch",), float, None, "refresh every SECONDS (default 2), marking new (+) and closed (-) "
          "sockets", metavar="[=SECONDS]"),
     Flag("peers", ("--peers",), bool, True, "name remote addresses that are pods, Services or nodes (one list "
          "of each per run); on by default", off=("--no-peers",), show_default=False),
     _switch("events", ("--events",), "follow connections as they close (ss -E): a row each, with its peer, "
             "then totals per peer; in every pod of a workload, selector or Service"),
     Flag("duration", ("--for",), str, None, f"with --events: how long to follow (default {EVENTS_FOR}; 2m, 500ms, "
          "seconds)", metavar="DURATION"),
     Flag("count", ("--count",), int, None, "with --events: stop after N connections in all", metavar="N"),
     PROFILE, IMAGE, PULL, TIMEOUT, IDLE_TIMEOUT),
    EPILOG)

SWEEP = Command(
    "sweep",
    "Every port problem in scope: what pods and Services declare against what really listens.",
    (),
    (NAMESPACE, ALL_NAMESPACES,
     SELECTOR._replace(help="only pods with these labels"),
     VIA, CONTEXT, KUBECONFIG, SWEEP_OUTPUT, NO_HEADERS, SORT_BY, FAIL_ON,
     Flag("parallel", ("--parallel",), int, 8, "agents added and queried at once (pods wait for their agents "
          "together), or nodes inspected at once"),
     _switch("verbose", ("-v", "--verbose"), "each API retry as it happens, and the requests made by kind"),
     PROFILE, IMAGE, PULL, TIMEOUT, IDLE_TIMEOUT))

TRIAGE = Command(
    "triage",
    "On-call triage of one pod or node: findings first (most severe first), then the numbers behind them.",
    (Arg("target", "pod/NAME, NAME, a workload, or node/NAME", required=True),),
    (NAMESPACE, CONTEXT, KUBECONFIG, CONTAINER, TRIAGE_OUTPUT, NO_HEADERS, SORT_BY, FAIL_ON,
     Flag("events", ("--events",), str, None, "also follow closed connections for DURATION (10s, 1m) and judge "
          "them: resets, failed connects, churn, per peer", metavar="DURATION"),
     PROFILE, IMAGE, PULL, TIMEOUT, IDLE_TIMEOUT))

AGENTS = Command(
    "agents",
    "Every agent sockdebug started: agent containers in pods (running or ended; they stay in the pod spec) and "
    "node pods, read from pod specs and statuses (no exec).",
    (),
    (NAMESPACE, ALL_NAMESPACES, SELECTOR._replace(help="only pods with these labels"), CONTEXT, KUBECONFIG,
     AGENTS_OUTPUT, NO_HEADERS, SORT_BY))

STOP = Command(
    "stop",
    "End running agents: each serve agent is told to exit (its container then shows Terminated; the entry "
    "stays in the pod spec, as Kubernetes requires) and leftover node pods are deleted.",
    (Arg("target", "pod/NAME, NAME, deploy/, sts/, ds/, rs/, job/, svc/ (every pod of it) or node/NAME "
         "(node pods there)"),),
    (NAMESPACE, ALL_NAMESPACES._replace(help="with -l or --all: every namespace"),
     SELECTOR._replace(help="pods with these labels"),
     _switch("all", ("--all",), "every agent in the namespace (-A: in every namespace)"),
     CONTEXT, KUBECONFIG, TIMEOUT._replace(help="seconds to wait for each agent to end")))

VERSION = Command("version", "Print the plugin's version.", (), ())

COMMANDS = {c.name: c for c in (INSPECT, SWEEP, TRIAGE, AGENTS, STOP, VERSION)}


def value_flags() -> frozenset[str]:
    """Every option name, of any command, that takes a value."""
    return frozenset(n for c in COMMANDS.values() for f in c.flags if f.type is not bool for n in f.names)


# --- parsing ------------------------------------------------------------------------------------

def normalise(argv: list[str]) -> list[str]:
    """``kubectl sockdebug pod/x`` means ``inspect pod/x``; a bare ``--watch`` means 2 s."""
    out = []
    for i, arg in enumerate(argv):
        bare_watch = arg == "--watch" and (i + 1 >= len(argv) or not _is_number(argv[i + 1]))
        out.append("--watch=2" if bare_watch else arg)
    if not out or out[0] not in COMMANDS:
        out.insert(0, "inspect")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _usage(message: str) -> UsageError:
    return UsageError(message, HELP_HINT)


def parse(argv: list[str]) -> Union[Help, Parsed]:
    """``argv`` (the words after the plugin's name) as a command and its raw values."""
    args = normalise(list(argv))
    cmd = COMMANDS[args[0]]
    rest = args[1:]
    if args == ["inspect"]:
        return Help("inspect")  # `kubectl sockdebug` alone
    if any(a in HELP_NAMES for a in (rest[:rest.index("--")] if "--" in rest else rest)):
        return Help(cmd.name)
    by_name = {n: f for f in cmd.flags for n in (*f.names, *f.off)}
    values: dict[str, Any] = {f.dest: f.default for f in cmd.flags}
    order: list[str] = []
    positionals: list[str] = []
    i, only_args = 0, False
    while i < len(rest):
        arg = rest[i]
        i += 1
        if only_args or arg == "-" or not arg.startswith("-"):
            positionals.append(arg)
        elif arg == "--":
            only_args = True
        elif arg.startswith("--"):
            name, eq, value = arg.partition("=")
            flag = _lookup(by_name, name)
            if flag.type is bool:
                if eq:
                    raise _usage(f"Option '{name}' does not take a value.")
                values[flag.dest] = name not in flag.off
                order.append(flag.dest)
            else:
                if not eq:
                    if i >= len(rest):
                        raise _usage(f"Option '{name}' requires an argument.")
                    value, i = rest[i], i + 1
                values[flag.dest] = convert(flag, name, value)
        else:
            i = _short_cluster(arg, rest, i, by_name, values, order)
    _assign(cmd, positionals, values)
    return Parsed(cmd.name, values, tuple(order))


def _lookup(by_name: dict[str, Flag], name: str) -> Flag:
    flag = by_name.get(name)
    if flag is None:
        close = sorted(n for n in by_name if n.startswith(name) and name.startswith("--"))
        hint = f" Did you mean {close[0]}?" if close else ""
        raise _usage(f"No such option: {name}{hint}")
    return flag


def _short_cluster(arg: str, rest: list[str], i: int, by_name: dict[str, Flag], values: dict[str, Any],
                   order: list[str]) -> int:
    """``-tu4`` (switches bundled), ``-nprod`` / ``-n prod`` (a value attached or next)."""
    for j in range(1, len(arg)):
        name = "-" + arg[j]
        flag = _lookup(by_name, name)
        if flag.type is bool:
            values[flag.dest] = name not in flag.off
            order.append(flag.dest)
            continue
        value = arg[j + 1:]
        if not value:
            if i >= len(rest):
                raise _usage(f"Option '{name}' requires an argument.")
            value, i = rest[i], i + 1
        values[flag.dest] = convert(flag, name, value)
        break
    return i


def _assign(cmd: Command, positionals: list[str], values: dict[str, Any]) -> None:
    for arg in cmd.args:
        if arg.many:
            values[arg.dest], positionals = positionals, []
        elif positionals:
            values[arg.dest] = positionals.pop(0)
        elif arg.required:
            raise _usage(f"Missing argument '{arg.dest.upper()}'.")
        else:
            values[arg.dest] = None
    if positionals:
        extra = " ".join(positionals)
        raise _usage(f"Got unexpected extra argument{'s' if len(positionals) > 1 else ''} ({extra})")


def convert(flag: Flag, name: str, value: str) -> Any:
    """The value as the flag's type (int/float), or the usage error click would give."""
    if flag.type is str:
        return value
    try:
        return flag.type(value)
    except ValueError:
        kind = "integer" if flag.type is int else "float"
        raise _usage(f"Invalid value for '{name}': {value!r} is not a valid {kind}.") from None


def check_choice(flag: Flag, value: Optional[str]) -> None:
    """A value outside the flag's choice set: the usage error, naming the set."""
    if value is not None and flag.choices and value not in flag.choices:
        what = "output format" if flag.dest == "output" else flag.names[-1]
        raise UsageError(f"unknown {what} {value!r}", f"use {choices.one_of(flag.choices)}")
