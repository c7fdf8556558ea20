"""The plugin's renderers.  The tables (table, wide) are the agent's renderer,
``sockdebug_agent.render``, so that ``sockdebug-agent`` on a terminal prints the same;
here are the json/yaml document and the jsonl lines.

Every string that comes from a target goes through ``escape`` before it reaches a
terminal; ``-o yaml`` also escapes lone surrogates (undecodable bytes an older agent
may still send) so that they cannot stop the dump.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Optional, TextIO

from sockdebug_agent.render import (
    Result,
    address,
    escape,
    findings_text,
    format_table,
    info_text,
    interfaces_table,
    limits_text,
    ms_text,
    notable_warnings,
    process_text,
    report_text,
    routes_table,
    sockets_table,
    summary_text,
    target_title,
    timer_text,
    use_color,
)
from sockdebug_agent.schema import to_dict

__all__ = [
    "Result", "address", "document", "escape", "findings_text", "format_table", "info_text",
    "interfaces_table", "items", "jsonl_line", "limits_text", "ms_text", "notable_warnings", "process_text",
    "report_text", "routes_table", "sockets_table", "summary_text", "target_title", "timer_text", "use_color",
    "without_surrogates", "write_doc", "write_document",
]

# --- documents ----------------------------------------------------------------------------

def document(results: Sequence[Result], peer: Optional[Callable[[Any], Optional[dict]]] = None,
             kind: str = "SocketReport") -> dict[str, Any]:
    """The json/yaml document: one item per target, records grouped by type; each socket
    has a ``peer`` (``{kind, namespace?, name}`` from ``peer``, or null)."""
    return {"apiVersion": "sockdebug.io/v1", "kind": kind, "items": items(results, peer)}


def items(results: Sequence[Result], peer: Optional[Callable[[Any], Optional[dict]]] = None
          ) -> list[dict[str, Any]]:
    """The document's items (the triage report carries them too)."""
    out = []
    for res in results:
        item: dict[str, Any] = {"target": res.target}
        for rec in res.records:
            if rec.type in ("hello", "end"):
                item.setdefault("agent", {})[rec.type] = to_dict(rec)
                continue
            data = to_dict(rec)
            del data["type"]
            if rec.type == "socket":
                data["peer"] = peer(rec) if peer is not None else None
            if rec.type in ("summary", "limits"):
                item[rec.type] = data
            else:
                item.setdefault(_PLURALS.get(rec.type, rec.type + "s"), []).append(data)
        out.append(item)
    return out


_PLURALS = {"process_limits": "process_limits"}


def write_document(results: Sequence[Result], output: str, out: TextIO,
                   peer: Optional[Callable[[Any], Optional[dict]]] = None) -> None:
    write_doc(document(results, peer), output, out)


def write_doc(doc: dict[str, Any], output: str, out: TextIO) -> None:
    """Any report document as json or yaml (the findings reports use it too)."""
    if output == "json":
        json.dump(doc, out, indent=2)
        out.write("\n")
        return
    import yaml  # only for -o yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    yaml.dump(without_surrogates(doc), out, Dumper=dumper, sort_keys=False, default_flow_style=False,
              allow_unicode=False)


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) escaped as ``escape``
    does (``\\udcff`` -> ``\\xff``): libyaml cannot encode them, and the schema's rule for
    an undecodable byte is those four characters.  Other text is left to YAML's quoting,
    which already escapes control characters."""
    if isinstance(value, str):
        return _SURROGATE.sub(lambda m: escape(m.group()), value) if not value.isprintable() else value
    if isinstance(value, dict):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_surrogates(v) for v in value]
    return value


def jsonl_line(record: Any, target: dict[str, Any], tag: bool) -> str:
    """A record as the agent sent it, plus the target when several are streamed together."""
    data = to_dict(record)
    if tag:
        data["target"] = target
    return json.dumps(data, separators=(",", ":"))
