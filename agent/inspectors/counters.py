"""Parsers for the kernel's counter files: /proc/net/{sockstat,sockstat6,snmp,netstat}."""

from __future__ import annotations

from typing import Optional

from ..schema import text


def parse_sockstat(text: str) -> dict[str, dict[str, int]]:
    """``TCP: inuse 15 orphan 0 tw 0 alloc 4027 mem 459`` -> {"TCP": {"inuse": 15, ...}}."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        words = rest.split()
        out[name.strip()] = {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)
                             if words[i + 1].isascii() and words[i + 1].isdigit()}
    return out


def parse_counter_pairs(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/snmp and /proc/net/netstat: a header line of names then a line of values
    per group (``Tcp: RtoAlgorithm ...`` / ``Tcp: 1 ...``)."""
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2]):
        group, _, names = header.partition(":")
        vgroup, _, numbers = values.partition(":")
        if group != vgroup:
            raise ValueError(f"counter header {group!r} followed by values of {vgroup!r}")
        out[group] = dict(zip(names.split(), (int(v) for v in numbers.split())))
    return out


def read_optional(path: str) -> Optional[str]:
    """A /proc file's text, or None where this kernel or namespace lacks it."""
    try:
        with open(path, "rb") as f:
            return text(f.read())
    except OSError:
        return None
