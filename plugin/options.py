"""One options object per command, from the command line to the runner: complete -> validate.

``build`` completes what the user left out (defaults that need no cluster: the agent
image); each object's ``validate`` rejects every bad value and combination, and the
filter's syntax, before any API call or client import (kubectl debug's
``DebugOptions.Complete/Validate/Run``).  What needs the cluster (the context's
namespace, the profile ``auto`` picks) is settled by the runner.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

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
    """ss's socket switches (field order = the order the agent receives the letters)."""

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

    def letters(self) -> list[str]:
        return [_LETTERS[name] for name, on in zip(self._fields, self) if on]

    def selects(self) -> bool:
        """A switch other than -p (on by default) was given: the user asked for sockets."""
        return any(on for name, on in zip(self._fields, self) if name != "processes")


_LETTERS = {"listening": "-l", "all_states": "-a", "tcp": "-t", "udp": "-u", "unix": "-x", "raw": "-w",
            "ipv4": "-4", "ipv6": "-6", "processes": "-p", "timers": "-o", "extended": "-e", "memory": "-m",
            "info": "-i"}


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

    def validate(self) -> None:
        flags.check_choice(flags.INSPECT_OUTPUT, self.output)
        if self.watch is not None and self.watch <= 0:
            raise UsageError("--watch needs a positive interval", "e.g. --watch=2")
        if self.target is None and not self.selector:
            raise UsageError("no target given", "usage: kubectl sockdebug pod/NAME [options]  "
                             "(or -l SELECTOR [-A] for every matching pod)")
        check_filter(self.words, self.sockets)
        self.agent.validate()

    def queries(self) -> list[list[str]]:
        """The agent command lines for the requested views.  Like ``ss -s``, a view flag
        alone shows just that view; socket switches or filter words add the socket list."""
        args = self.sockets.letters()
        if self.output == "wide":
            args += [a for a in ("-o", "-i") if a not in args]
        queries = [[name] for name, on in zip(self.views._fields, self.views) if on]
        if not queries or self.sockets.selects() or self.words:
            queries.insert(0, ["sockets", *args, *self.words])
        return queries


class TriageOptions(NamedTuple):
    target: str
    conn: Conn
    agent: AgentOptions
    container: Optional[str] = None
    output: str = "table"
    fail_on: Optional[str] = None

    def validate(self) -> None:
        flags.check_choice(flags.TRIAGE_OUTPUT, self.output)
        flags.check_choice(flags.FAIL_ON, self.fail_on)
        self.agent.validate()

    def queries(self) -> list[list[str]]:
        """A node's own namespace is triaged as a host (its daemons bind loopback)."""
        from .targets import parse_target

        return [["triage", "--host"]] if parse_target(self.target).kind == "node" else [["triage"]]


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
        return InspectOptions(
            v["target"], tuple(v["words"]), conn, agent, v["container"], v["selector"], v["all_namespaces"],
            v["all_pods"], v["output"], SocketFlags(*(v[f] for f in SocketFlags._fields)),
            Views(*(v[f] for f in Views._fields)), v["watch"])
    if parsed.command == "triage":
        return TriageOptions(v["target"], conn, agent, v["container"], v["output"], v["fail_on"])
    return SweepOptions(conn, agent, v["all_namespaces"], v["selector"], v["via"], v["output"], v["fail_on"],
                        v["parallel"])


def check_filter(words: tuple[str, ...], sockets: SocketFlags) -> None:
    """The filter's syntax, checked here so a typo never reaches the cluster."""
    from sockdebug_agent.filter import FilterError, select

    try:
        select(tcp=sockets.tcp, udp=sockets.udp, raw=sockets.raw, unix=sockets.unix, ipv4=sockets.ipv4,
               ipv6=sockets.ipv6, all_states=sockets.all_states, listening=sockets.listening, words=list(words))
    except FilterError as exc:
        where = f" at {exc.word!r}" if exc.word else " at the end of the expression"
        raise UsageError(f"invalid filter{where}: {exc}",
                         "ss syntax: state NAME ... [src|dst HOST] [sport|dport OP PORT], and/or/not, ( )"
                         ) from None
