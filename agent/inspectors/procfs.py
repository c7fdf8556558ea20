"""What /proc lets this agent see of other processes: whether it is mounted at all,
and whether ``hidepid`` hides other users' processes.

With ``hidepid=invisible`` (2) or ``ptraceable`` (4) the ``/proc/PID`` directories of
processes the agent may not ptrace do not exist for it: they cannot be counted as
denied, so the owners of their sockets would be missing without a word.  The mount
options come from ``/proc/self/mountinfo`` (pure parser below).
"""

from __future__ import annotations

import os
from typing import Optional

from .processes import CAP_SYS_PTRACE, has_capability, read_text

_HIDDEN = {"2": "invisible", "invisible": "invisible", "4": "ptraceable", "ptraceable": "ptraceable"}


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as ``\\ooo``."""
    if "\\" not in field:
        return field
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def proc_mount_options(mountinfo: str, mount_point: str = "/proc") -> Optional[dict[str, str]]:
    """The super options of the proc filesystem mounted at ``mount_point`` (the last such
    line: the mount on top), as ``{name: value}``; None when no proc is mounted there.

    A line: ``ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS``.
    """
    found = None
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3:
            continue
        if rest[0] == "proc" and _unescape(fields[4]) == mount_point:
            found = dict(o.partition("=")[::2] for o in rest[2].split(","))
    return found


def hidden_reason(options: dict[str, str], euid: int, groups: list[int], ptrace: Optional[bool]) -> Optional[str]:
    """Why other users' processes are invisible with these proc options, or None."""
    mode = _HIDDEN.get(options.get("hidepid", ""))
    if mode is None or ptrace:  # CAP_SYS_PTRACE may ptrace anything: hidepid hides nothing from it
        return None
    gid = options.get("gid")
    if gid is not None and gid.isdigit() and int(gid) in groups:
        return None
    return (f"/proc is mounted with hidepid={mode}: the processes of other users are invisible to this agent "
            f"(uid {euid}, without CAP_SYS_PTRACE) and cannot even be counted")


def mounted(proc: str = "/proc") -> bool:
    return os.path.isdir(f"{proc}/self")


def processes_hidden(proc: str = "/proc") -> Optional[str]:
    """Why /proc hides (some) processes from this agent; None when it shows every one it may read."""
    if not mounted(proc):
        return f"{proc} is not mounted in this mount namespace, so no process is visible"
    options = proc_mount_options(read_text(f"{proc}/self/mountinfo") or "", proc)
    if options is None:
        return None
    return hidden_reason(options, os.geteuid(), [os.getegid(), *os.getgroups()],
                         has_capability(CAP_SYS_PTRACE, proc))
