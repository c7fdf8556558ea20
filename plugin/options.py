"""One options object per command, from the command line to the runner: complete -> validate.

``build`` completes what the user left out (defaults that need no cluster: the agent
image); each object's ``validate`` rejects every bad value and combination, and the
filter's syntax, before any API call or client import (kubectl debug's
``DebugOptions.Complete/Validate/Run``).  What needs the cluster (the context's
namespace, the profile ``auto`` picks) is settled by the runner.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Union

from . import flags
from .errors import UsageError

MAX_IDLE_TIMEOUT = 999_999_999  # the agent reads at most nine digits of seconds


class Conn(NamedTuple):
    """How to reach the cluster, as typed (None: kubectl's defaults)."""

    namespace: Optional[str] = None
    context: Optional[str] = None
    kubeconfig: Optional[str] = None


class AgentOptions(NamedTuple):
    """How the agent runs: the same for every target of one run."""

    image: str
    pull_policy: str = "IfNotPresent"
    profile: str = "auto"
    timeout: float = 60.0
    idle_timeout: float = flags.IDLE_TIMEOUT.default  #: seconds a serve agent this run starts waits for queries

    def validate(self) -> None:
        flags.check_choice(flags.PROFILE, self.profile)
        flags.check_choice(flags.PULL, self.pull_policy)
        if not self.timeout > 0:
            raise UsageError("--timeout must be positive", "e.g. --timeout 60")
        if not (math.isfinite(self.idle_timeout) and 0.001 <= self.idle_timeout <= MAX_IDLE_TIMEOUT):
            raise UsageError(f"--idle-timeout must be a finite number of seconds from 0.001 to {MAX_IDLE_TIMEOUT}, "
                             f"not {self.idle_timeout:g}", "e.g. --idle-timeout 900 (the default: 15 minutes)")


class Printing(NamedTuple):
    """``-o``, ``--no-headers`` and ``--sort-by``, parsed.  ``kind`` is a plain format
    (table, wide, json, yaml, jsonl), ``jsonpath`` or ``custom-columns``; ``spec`` and
    ``sort`` come from printers.py, which is imported only when a template or a sort was
    given (a warm query of a plain table never loads it)."""

    kind: str = "table"
    spec: Any = None  #: printers.Output of a template format
    show_headers: bool = True
    sort: Any = None  #: the --sort-by path, a jsonpath.Template relative to one row


def printing(flag: flags.Flag, output: str, no_headers: bool = False, sort_by: Optional[str] = None) -> Printing:
    """The output options of a command whose ``-o`` flag is ``flag``: a bad format,
    template, columns or sort path is a UsageError saying what and where."""
    if output in (flag.choices or ()) and sort_by is None:
        return Printing(output, None, not no_headers)
    from . import printers

    spec = printers.parse_output(output, flag.choices or ())
    if sort_by is not None and not sort_by.strip():
        raise UsageError("--sort-by needs a path", "e.g. --sort-by=.local_port")
    return Printing(spec.kind, spec if spec.kind in ("jsonpath", "custom-columns") else None, not no_headers,
                    printers.parse_sort_by(sort_by) if sort_by is not None else None)


def check_printing(flag: flags.Flag, output: str, p: Printing) -> None:
    """The plain format is one of the command's (a template was checked when parsed);
    a stream cannot be sorted."""
    if p.spec is None:
        flags.check_choice(flag, output)
    if p.sort is not None and p.kind == "jsonl":
        raise UsageError("--sort-by cannot sort a stream (-o jsonl)", "use -o json or yaml, or a table")


class SocketFlags(NamedTuple):
    """ss's socket switches, as given on the plugin's command line."""

    listening: bool = False
    all_states: bool = False
    tcp: bool = False
    udp: bool = False
    unix: bool = False
    raw: bool = False
    ipv4: bool = False
    ipv6: bool = False
    processes: bool = True
    timers: bool = False
    extended: bool = False
    memory: bool = False
    info: bool = False
    last_family: Optional[str] = None  #: unix, ipv4 or ipv6: the family switch given last

    def selects(self) -> bool:
        """A switch other than -p (on by default) was given: the user asked for sockets."""
        return any(on for name, on in zip(self._fields, self) if name not in ("processes", "last_family"))

    def query_flags(self, wide: bool = False) -> Any:
        """The agent's ``query.SocketFlags`` (``wide`` adds timers and TCP internals)."""
        from sockdebug_agent.query import FAMILY_FLAGS
        from sockdebug_agent.query import SocketFlags as AgentFlags

        flags = AgentFlags(listening=self.listening, all=self.all_states, tcp=self.tcp, udp=self.udp, unix=self.unix,
                           raw=self.raw, ipv4=self.ipv4, ipv6=self.ipv6, processes=self.processes,
                           timers=self.timers or wide, extended=self.extended, memory=self.memory,
                           info=self.info or wide)
        given = dict(FAMILY_FLAGS).get(self.last_family or "")
        families = flags.families()
        if given in families and given != families[-1]:  # ss reads the filter in the family given last
            flags = flags.replace(preferred_family=given)
        return flags


class Views(NamedTuple):
    summary: bool = False
    routes: bool = False
    interfaces: bool = False
    limits: bool = False


class InspectOptions(NamedTuple):
    target: Optional[str]
    words: tuple[str, ...]
    conn: Conn
    agent: AgentOptions
    container: Optional[str] = None
    selector: Optional[str] = None
    all_namespaces: bool = False
    all_pods: bool = False
    output: str = "table"
    sockets: SocketFlags = SocketFlags()
    views: Views = Views()
    watch: Optional[float] = None
    printing: Printing = Printing()
    peers: bool = True  #: name remote addresses (peers.py)
    events: bool = False  #: --events: follow closed connections (events_run.py)
    duration: Optional[str] = None  #: --for, with --events
    count: Optional[int] = None  #: --count, with --events

    def validate(self) -> None:
        check_printing(flags.INSPECT_OUTPUT, self.output, self.printing)
        if self.watch is not None and self.watch <= 0:
            raise UsageError("--watch needs a positive interval", "e.g. --watch=2")
        if self.watch is not None and self.printing.kind not in ("table", "wide"):
            raise UsageError(f"--watch redraws a table: -o {self.printing.kind} cannot be watched",
                             "use -o table or -o wide with --watch")
        if not self.events and (self.duration is not None or self.count is not None):
            raise UsageError("--for and --count go with --events", "e.g. --events --for 30s")
        if self.events and (self.watch is not None or any(self.views)):
            raise UsageError("--events follows connections as they close: it takes no --watch, -s, --routes, "
                             "--interfaces or --limits", "run those views on their own")
        if self.events and self.printing.sort is not None and self.printing.kind in ("table", "wide"):
            raise UsageError("--events prints rows as the connections close: --sort-by cannot sort them",
                             "use -o json, yaml, jsonpath or custom-columns with --sort-by (the events in order)")
        if self.target is None and not self.selector:
            raise UsageError("no target given", "usage: kubectl sockdebug pod/NAME [options]  "
                             "(or -l SELECTOR [-A] for every matching pod)")
        for query in self.queries():
            query.check()  # flags and the filter's syntax: names mean something only inside the pod
        self.agent.validate()

    def names_peers(self) -> bool:
        """Whether remote addresses are to be named (``peers.py``): on, and a socket list
        that may hold connections (not ``--listening`` only, not unix only) in an output
        that shows them (``jsonl`` streams the agent's records as they are).  Decided
        from the switches alone: a warm query asks before anything else is imported."""
        s = self.sockets
        socket_list = not any(self.views) or s.selects() or bool(self.words)  # as queries() decides
        return (self.peers and self.output != "jsonl" and socket_list and not (s.listening and not s.all_states)
                and not (s.unix and not (s.tcp or s.udp or s.raw)))

    def queries(self) -> list[Any]:
        """The agent queries (``sockdebug_agent.query.Query``) for the requested views.  Like
        ``ss -s``, a view switch alone shows just that view; socket switches or filter words
        add the socket list."""
        from sockdebug_agent.query import Query

        if self.events:
            return [Query("events", self.sockets.query_flags(), self.words, duration=self.duration or flags.EVENTS_FOR,
                          count=self.count)]
        queries = [Query(name) for name, on in zip(self.views._fields, self.views) if on]
        if not queries or self.sockets.selects() or self.words:
            queries.insert(0, Query("sockets", self.sockets.query_flags(self.printing.kind == "wide"), self.words))
        return queries


class TriageOptions(NamedTuple):
    target: str
    conn: Conn
    agent: AgentOptions
    container: Optional[str] = None
    output: str = "table"
    fail_on: Optional[str] = None
    printing: Printing = Printing()
    events: Optional[str] = None  #: --events DURATION: a capture of closed connections beside the snapshot

    def validate(self) -> None:
        check_printing(flags.TRIAGE_OUTPUT, self.output, self.printing)
        flags.check_choice(flags.FAIL_ON, self.fail_on)
        if self.events is not None:
            from sockdebug_agent.query import Query

            try:
                Query("events", duration=self.events).check()
            except UsageError as exc:
                raise UsageError(exc.cause.replace("--for", "--events"), "e.g. --events 10s") from None
        self.agent.validate()

    def queries(self) -> list[Any]:
        from .targets import parse_target

        return triage_queries(parse_target(self.target).kind == "node")

    def capture(self) -> Optional[Any]:
        """``--events``: the capture beside the snapshot (TCP, no owners, only the final tick)."""
        if self.events is None:
            return None
        from sockdebug_agent.query import Query, SocketFlags

        return Query("events", SocketFlags(tcp=True, processes=False), duration=self.events, tick=0.0)


def triage_queries(node: bool) -> list[Any]:
    """A pod's: the agent's ``triage`` (netns findings and figures) and every TCP/UDP
    socket, listening or not, with owners; a node's: ``triage --host --sockets`` (its
    daemons bind loopback; one query, so one node pod)."""
    from sockdebug_agent.query import Query, SocketFlags

    if node:
        return [Query("triage", host=True, sockets=True)]
    return [Query("triage"), Query("sockets", SocketFlags(all=True, tcp=True, udp=True, processes=True))]


class SweepOptions(NamedTuple):
    conn: Conn
    agent: AgentOptions
    all_namespaces: bool = False
    selector: Optional[str] = None
    via: str = "ephemeral"
    output: str = "table"
    fail_on: Optional[str] = None
    parallel: int = 8
    printing: Printing = Printing()
    verbose: bool = False

    def validate(self) -> None:
        flags.check_choice(flags.VIA, self.via)
        check_printing(flags.SWEEP_OUTPUT, self.output, self.printing)
        flags.check_choice(flags.FAIL_ON, self.fail_on)
        if self.parallel < 1:
            raise UsageError("--parallel must be at least 1", "e.g. --parallel 8")
        self.agent.validate()
        if self.via == "node" and self.agent.profile in ("baseline", "restricted"):
            raise UsageError(f"--via node cannot run with --profile {self.agent.profile}: the node agent enters "
                             "every pod's network namespace, which needs CAP_SYS_ADMIN",
                             "use --profile auto, general or netadmin, or --via ephemeral")


class AgentsOptions(NamedTuple):
    conn: Conn
    all_namespaces: bool = False
    selector: Optional[str] = None
    output: str = "table"
    printing: Printing = Printing()

    def validate(self) -> None:
        check_printing(flags.AGENTS_OUTPUT, self.output, self.printing)


class StopOptions(NamedTuple):
    """What to stop: the agents of TARGET's pods, of pods with labels (-l), or every one
    (--all); -A widens -l and --all to every namespace."""

    conn: Conn
    target: Optional[str] = None
    selector: Optional[str] = None
    all: bool = False
    all_namespaces: bool = False
    timeout: float = 60.0

    def validate(self) -> None:
        given = [what for what, on in (("TARGET", self.target is not None), ("-l", self.selector is not None),
                                       ("--all", self.all)) if on]
        if len(given) != 1:
            raise UsageError("stop needs exactly one of TARGET, -l SELECTOR or --all" + (
                f" (got {' and '.join(given)})" if given else ""),
                "e.g. kubectl sockdebug stop pod/api, stop -l app=api, or stop --all [-A]")
        if self.target is not None:
            if self.all_namespaces:
                raise UsageError("-A goes with -l or --all, not with a TARGET", "give -n NAMESPACE for a TARGET")
            from .targets import parse_target

            parse_target(self.target)
        if not self.timeout > 0:
            raise UsageError("--timeout must be positive", "e.g. --timeout 60")


class VersionOptions(NamedTuple):
    def validate(self) -> None:
        pass


Options = Union[InspectOptions, TriageOptions, SweepOptions, AgentsOptions, StopOptions, VersionOptions]


def default_image() -> str:
    from sockdebug_agent import __version__

    return f"sockdebug-agent:{__version__}"


def build(parsed: flags.Parsed) -> Options:
    """The command's options object, completed: the parser's values, typed and defaulted."""
    v = parsed.values
    if parsed.command == "version":
        return VersionOptions()
    conn = Conn(v["namespace"], v["context"], v["kubeconfig"])
    if parsed.command == "stop":
        return StopOptions(conn, v["target"], v["selector"], v["all"], v["all_namespaces"], v["timeout"])
    out = printing(flags.COMMANDS[parsed.command].flag("output"), v["output"], v["no_headers"], v["sort_by"])
    if parsed.command == "agents":
        return AgentsOptions(conn, v["all_namespaces"], v["selector"], v["output"], out)
    agent = AgentOptions(v["image"] or default_image(), v["image_pull_policy"], v["profile"], v["timeout"],
                         v["idle_timeout"])
    if parsed.command == "inspect":
        families = [dest for dest in parsed.order if dest in ("unix", "ipv4", "ipv6") and v[dest]]
        sockets = SocketFlags(*(v[f] for f in SocketFlags._fields[:-1]), families[-1] if families else None)
        return InspectOptions(
            v["target"], tuple(v["words"]), conn, agent, v["container"], v["selector"], v["all_namespaces"],
            v["all_pods"], v["output"], sockets, Views(*(v[f] for f in Views._fields)), v["watch"], out,
            v["peers"], v["events"], v["duration"], v["count"])
    if parsed.command == "triage":
        return TriageOptions(v["target"], conn, agent, v["container"], v["output"], v["fail_on"], out, v["events"])
    return SweepOptions(conn, agent, v["all_namespaces"], v["selector"], v["via"], v["output"], v["fail_on"],
                        v["parallel"], out, v["verbose"])
