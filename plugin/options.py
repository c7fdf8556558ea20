"""One options object per command, from the command line to the runner: complete -> validate.

``build`` completes what the user left out (defaults that need no cluster: the agent
image); each object's ``validate`` rejects every bad value and combination, and the
filter's syntax, before any API call or client import (kubectl debug's
``DebugOptions.Complete/Validate/Run``).  What needs the cluster (the context's
namespace, the profile ``auto`` picks) is settled by the runner.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Union

from . import flags
from .errors import UsageError


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

    def validate(self) -> None:
        flags.check_choice(flags.PROFILE, self.profile)
        flags.check_choice(flags.PULL, self.pull_policy)
        if not self.timeout > 0:
            raise UsageError("--timeout must be positive", "e.g. --timeout 60")


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
    events: bool = False  #: --events: follow closed connections (events_run.py)
    duration: Optional[str] = None  #: --for, with --events
    count: Optional[int] = None  #: --count, with --events

    def validate(self) -> None:
        flags.check_choice(flags.INSPECT_OUTPUT, self.output)
        if self.watch is not None and self.watch <= 0:
            raise UsageError("--watch needs a positive interval", "e.g. --watch=2")
        if not self.events and (self.duration is not None or self.count is not None):
            raise UsageError("--for and --count go with --events", "e.g. --events --for 30s")
        if self.events and (self.watch is not None or any(self.views)):
            raise UsageError("--events follows connections as they close: it takes no --watch, -s, --routes, "
                             "--interfaces or --limits", "run those views on their own")
        if self.target is None and not self.selector:
            raise UsageError("no target given", "usage: kubectl sockdebug pod/NAME [options]  "
                             "(or -l SELECTOR [-A] for every matching pod)")
        for query in self.queries():
            query.check()  # flags and the filter's syntax: names mean something only inside the pod
        self.agent.validate()

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
            queries.insert(0, Query("sockets", self.sockets.query_flags(self.output == "wide"), self.words))
        return queries


class TriageOptions(NamedTuple):
    target: str
    conn: Conn
    agent: AgentOptions
    container: Optional[str] = None
    output: str = "table"
    fail_on: Optional[str] = None
    events: Optional[str] = None  #: --events DURATION: a capture of closed connections beside the snapshot

    def validate(self) -> None:
        flags.check_choice(flags.TRIAGE_OUTPUT, self.output)
        flags.check_choice(flags.FAIL_ON, self.fail_on)
        if self.events is not None:
            from sockdebug_agent.query import Query

            try:
                Query("events", duration=self.events).check()
            except UsageError as exc:
                raise UsageError(exc.cause.replace("--for", "--events"), "e.g. --events 10s") from None
        self.agent.validate()

    def queries(self) -> list[Any]:
        """A node's own namespace is triaged as a host (its daemons bind loopback)."""
        from sockdebug_agent.query import Query

        from .targets import parse_target

        return [Query("triage", host=parse_target(self.target).kind == "node")]


class SweepOptions(NamedTuple):
    conn: Conn
    agent: AgentOptions
    all_namespaces: bool = False
    selector: Optional[str] = None
    via: str = "ephemeral"
    output: str = "table"
    fail_on: Optional[str] = None
    parallel: int = 8

    def validate(self) -> None:
        flags.check_choice(flags.VIA, self.via)
        flags.check_choice(flags.SWEEP_OUTPUT, self.output)
        flags.check_choice(flags.FAIL_ON, self.fail_on)
        if self.parallel < 1:
            raise UsageError("--parallel must be at least 1", "e.g. --parallel 8")
        self.agent.validate()
        if self.via == "node" and self.agent.profile in ("baseline", "restricted"):
            raise UsageError(f"--via node cannot run with --profile {self.agent.profile}: the node agent enters "
                             "every pod's network namespace, which needs CAP_SYS_ADMIN",
                             "use --profile auto, general or netadmin, or --via ephemeral")


class VersionOptions(NamedTuple):
    def validate(self) -> None:
        pass


Options = Union[InspectOptions, TriageOptions, SweepOptions, VersionOptions]


def default_image() -> str:
    from sockdebug_agent import __version__

    return f"sockdebug-agent:{__version__}"


def build(parsed: flags.Parsed) -> Options:
    """The command's options object, completed: the parser's values, typed and defaulted."""
    v = parsed.values
    if parsed.command == "version":
        return VersionOptions()
    conn = Conn(v["namespace"], v["context"], v["kubeconfig"])
    agent = AgentOptions(v["image"] or default_image(), v["image_pull_policy"], v["profile"], v["timeout"])
    if parsed.command == "inspect":
        families = [dest for dest in parsed.order if dest in ("unix", "ipv4", "ipv6") and v[dest]]
        sockets = SocketFlags(*(v[f] for f in SocketFlags._fields[:-1]), families[-1] if families else None)
        return InspectOptions(
            v["target"], tuple(v["words"]), conn, agent, v["container"], v["selector"], v["all_namespaces"],
            v["all_pods"], v["output"], sockets, Views(*(v[f] for f in Views._fields)), v["watch"], v["events"],
            v["duration"], v["count"])
    if parsed.command == "triage":
        return TriageOptions(v["target"], conn, agent, v["container"], v["output"], v["fail_on"], v["events"])
    return SweepOptions(conn, agent, v["all_namespaces"], v["selector"], v["via"], v["output"], v["fail_on"],
                        v["parallel"])
