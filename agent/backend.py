"""The agent's back-ends, chosen once at start (psutil's style): netlink and /proc on
Linux, psutil elsewhere or with ``--psutil``.

Commands ask the chosen back-end (``choose``) for sockets, process limits, limits and
the summary, and never ask which platform they run on.  A command a back-end cannot
serve (``commands``) is refused once, before any work, with a usage error naming the
platform.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Optional

from .errors import KernelError, UsageError
from .filter import Selection, select
from .schema import Limits, ProcessLimits, Socket, Summary, Warning

Warn = Callable[[Warning], None]
LINUX = sys.platform.startswith("linux")

# Every command, and the ones only the Linux back-end serves (rtnetlink, /proc, setns).
ALL_COMMANDS = ("sockets", "summary", "routes", "interfaces", "limits", "triage", "pods", "events", "serve", "ids",
                "stop")
LINUX_ONLY = ("routes", "interfaces", "triage", "pods", "events", "ids", "stop")


class Backend:
    """One API over the ways of reading the kernel's tables."""

    name = ""
    commands: tuple[str, ...] = ALL_COMMANDS

    def unsupported(self, command: str) -> UsageError:
        return UsageError(f"`{command}` is not available on the {self.name} path", "")

    def sockets(self, sel: Selection, details, warn: Warn, lines: bool = False) -> Iterator[list]:
        """Batches of the selected sockets, as they become ready; with ``lines`` a back-end
        may give a batch as the records' JSON lines (str) instead (a writer that takes them)."""
        raise NotImplementedError

    def warn_no_proc(self, warn: Warn, consequence: str) -> bool:
        """A ``proc-unavailable`` warning when this back-end needs /proc and it is not mounted."""
        return False

    def process_limits(self, warn: Warn, all_netns: bool = False) -> list[ProcessLimits]:
        raise NotImplementedError

    def limits(self, warn: Warn) -> Limits:
        raise NotImplementedError

    def summary(self, warn: Warn) -> Summary:
        raise NotImplementedError


class Linux(Backend):
    """sock_diag and rtnetlink, /proc for owners, limits and what netlink lacks."""

    name = "netlink"

    def sockets(self, sel: Selection, details, warn: Warn, lines: bool = False) -> Iterator[list]:
        from .inspectors.sockets import collect

        if details.processes:
            self.warn_hidden(warn, "sockets they hold show no owner")
        return collect(sel, details, warn, lines)

    def warn_no_proc(self, warn: Warn, consequence: str) -> bool:
        from .inspectors import procfs

        if procfs.mounted():
            return False
        warn(Warning("proc-unavailable", f"/proc is not mounted in this mount namespace: {consequence}"))
        return True

    def warn_hidden(self, warn: Warn, consequence: str) -> Optional[str]:
        """A warning when /proc hides processes from this agent; returns why (None: all visible)."""
        from .inspectors import procfs

        why = procfs.processes_hidden()
        if why is not None:
            warn(Warning("processes-hidden", f"{why}: {consequence}"))
        return why

    def process_limits(self, warn: Warn, all_netns: bool = False) -> list[ProcessLimits]:
        from .inspectors import limits

        self.warn_hidden(warn, "they have no process_limits record")
        scan = limits.collect_process_limits(all_netns=all_netns)
        if scan.denied:
            denied = scan.denied
            warn(Warning("process-limits-denied",
                         f"could not read the open files or network namespace of {len(denied)} processes "
                         f"(pids {', '.join(map(str, denied[:10]))}{', ...' if len(denied) > 10 else ''}): "
                         "they have no process_limits record. Run as root with CAP_SYS_PTRACE.", len(denied)))
        return scan.records

    def limits(self, warn: Warn, sockets: Optional[list[Socket]] = None) -> Limits:
        """``sockets``: the TCP and UDP sockets already read (ports in use), or None to read them."""
        from .inspectors import limits
        from .inspectors.sockets import Details, collect_all

        if sockets is None:
            sockets = collect_all(select(tcp=True, udp=True, all_states=True), Details(), warn)
        return limits.collect_limits(sockets)

    def summary(self, warn: Warn) -> Summary:
        from .inspectors.sockets import Details, collect_all
        from .inspectors.summary import read_counters

        self.warn_no_proc(warn, "the summary's counters (sockets_used, transports, the TCP totals) are not known")
        counters = read_counters()  # first: the dump's own netlink socket would be counted
        return summarise(collect_all(select(all_states=True), Details(), warn), counters)

    def rtnetlink(self):
        """A NETLINK_ROUTE socket, or the error that says why there is none."""
        from .faults import os_resource
        from .netlink import NETLINK_ROUTE, Netlink

        try:
            return Netlink(NETLINK_ROUTE)
        except OSError as exc:
            raise os_resource(exc) or KernelError(
                f"NETLINK_ROUTE could not be opened ({exc.strerror}): routes and interfaces cannot be read",
                "a seccomp profile or security module denies netlink sockets to the agent: "
                "run it with the runtime's default seccomp profile") from None

    def require_proc(self, command: str) -> None:
        """Refuse ``command`` when /proc is not there at all (it reads nothing else)."""
        from .inspectors import procfs

        if not procfs.mounted():
            raise KernelError(f"/proc is not mounted in this mount namespace: `{command}` reads /proc/PID "
                              "and /proc/sys, so there is nothing to report",
                              "run the agent where /proc is mounted (mount -t proc proc /proc)")


def summarise(sockets: list[Socket], counters: tuple[str, str, str]) -> Summary:
    from .inspectors.summary import collect_summary

    states: Counter[str] = Counter()
    udp = unix = 0
    for sock in sockets:
        if sock.netid == "tcp":
            states[sock.state] += 1
        elif sock.netid == "udp":
            udp += 1
        elif sock.family == "unix":
            unix += 1
    return collect_summary(states, udp, unix, counters)


class Psutil(Backend):
    """psutil's connection and process tables: TCP/UDP and fd counts, on any platform."""

    name = "psutil"

    def __init__(self, forced: bool) -> None:
        self.forced = forced
        # --psutil on Linux still reads netlink for `summary` (documented: only sockets and limits switch).
        self.commands = tuple(c for c in ALL_COMMANDS if c not in LINUX_ONLY and (LINUX or c != "summary"))

    def unsupported(self, command: str) -> UsageError:
        why = "--psutil was given" if self.forced else f"this is {sys.platform}, not Linux"
        return UsageError(f"`{command}` reads rtnetlink and /proc, which the psutil path does not have ({why})",
                          "on this path only `sockets` and `limits` work")

    def sockets(self, sel: Selection, details, warn: Warn, lines: bool = False) -> Iterator[list]:
        from .inspectors import portable

        found = portable.collect_sockets(sel, details.processes, warn)
        if found:
            yield found

    def process_limits(self, warn: Warn, all_netns: bool = False) -> list[ProcessLimits]:
        from .inspectors import portable

        warn(portable.missing_warning("limits", portable.MISSING_LIMITS_FIELDS))
        return portable.collect_process_limits(warn)

    def limits(self, warn: Warn, sockets: Optional[list[Socket]] = None) -> Limits:
        from .inspectors import portable

        return portable.collect_limits()

    def summary(self, warn: Warn) -> Summary:
        return Linux().summary(warn)


def choose(force_psutil: bool = False) -> Backend:
    """The back-end of this run: netlink on Linux unless --psutil; psutil elsewhere."""
    if LINUX and not force_psutil:
        return Linux()
    return Psutil(forced=force_psutil)
