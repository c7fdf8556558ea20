"""Small private JSON files under ``$XDG_CACHE_HOME/sockdebug`` (``~/.cache/sockdebug``).

The plugin keeps two things between runs: the rendered ``--help`` (helptext.py) and
where each pod's agent containers are (warm.py).  Files are 0600 in a 0700 folder and
replaced atomically; any trouble reading or writing them only costs the slow path, so
errors are swallowed here and nowhere else.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional


def folder() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sockdebug")


def read(name: str) -> Optional[Any]:
    try:
        with open(os.path.join(folder(), name), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write(name: str, value: Any) -> None:
    path = os.path.join(folder(), name)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(folder(), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(value, f, separators=(",", ":"))
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
