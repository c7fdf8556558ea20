"""kubectl's output conventions over sockdebug's documents, as pure functions: ``-o
jsonpath=``/``jsonpath-file=``, ``-o custom-columns=``/``custom-columns-file=``,
``--sort-by`` and ``--no-headers`` (k8s.io/kubectl/pkg/cmd/get: customcolumn.go,
sorter.go; cli-runtime's printers).

The CLI parses ``-o`` and ``--sort-by`` with ``parse_output`` and ``parse_sort_by``
before any API call (a bad format or template is a ``UsageError`` that says what and
where), then prints with ``jsonpath_text`` over ``render.document``, or
``custom_columns_text`` over the rows of a table view (``rows``: one JSON object per
socket or finding, as in ``-o json``, plus its ``target``); ``row_sorter`` gives the
tables' ``sort``.  output.py puts them together for every command.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Optional, TypeVar

from sockdebug_agent.render import Pair, Sorter, escape, width
from sockdebug_agent.schema import RECORD_TYPES, Process, Timer, to_dict

from .choices import INSPECT_OUTPUTS, TEMPLATE_OUTPUTS, output_names
from .errors import UsageError
from .gotext import json_text
from .jsonpath import DOCS, Template, text

NONE = "<none>"
T = TypeVar("T")


class Column(NamedTuple):
    header: str
    path: Template  #: relative to one row


class Output(NamedTuple):
    """A parsed ``-o``: ``kind`` is a plain format (``choices.INSPECT_OUTPUTS``, ...),
    ``jsonpath`` or ``custom-columns``."""

    kind: str
    template: Optional[Template] = None
    columns: tuple[Column, ...] = ()


def parse_output(value: str, plain: tuple[str, ...] = INSPECT_OUTPUTS,
                 read: Callable[[str], str] = lambda path: Path(path).read_text(encoding="utf-8")) -> Output:
    """``-o VALUE`` checked and parsed: a plain format, or a template (read from its file
    for the ``-file`` forms)."""
    if value in plain:
        return Output(value)
    name, eq, arg = value.partition("=")
    if name not in TEMPLATE_OUTPUTS:
        raise UsageError(f"unknown output format {value!r}", f"use one of: {', '.join(output_names(plain))}")
    if not eq:
        raise UsageError(f"-o {name} needs its {'file' if name.endswith('-file') else 'template'} after '='",
                         f"e.g. -o {name}=" + {"jsonpath": "'{.items[*].sockets[*].local_port}'",
                                              "custom-columns": "PORT:.local_port,STATE:.state"}.get(name, "FILE"))
    if name.endswith("-file"):
        try:
            arg = read(arg)
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the {name} {arg!r}: {exc.strerror if isinstance(exc, OSError) else exc}",
                             "give the path of a readable text file") from None
        name = name[:-len("-file")]
    if name == "jsonpath":
        if not arg:
            raise UsageError("template format specified but no template given", DOCS)
        return Output("jsonpath", template=Template(arg))
    columns = parse_columns_file(arg) if value.startswith("custom-columns-file=") else parse_columns(arg)
    return Output("custom-columns", columns=tuple(columns))


def parse_sort_by(path: str) -> Template:
    """``--sort-by=PATH``: ``.local_port``, ``{.local_port}``, ``local_port`` (kubectl's
    relaxed forms) or any jsonpath, relative to one row."""
    try:
        return Template(relaxed(path))
    except UsageError:
        return Template(path)


_RELAXED = re.compile(r"^\{\.?([^{}]+)\}$|^\.?([^{}]+)$")


def relaxed(path: str) -> str:
    """kubectl's RelaxedJSONPathExpression: ``a.b``, ``.a.b``, ``{a.b}`` and ``{.a.b}``
    all become ``{.a.b}``."""
    m = _RELAXED.match(path)
    if m is None:
        raise UsageError(f"unexpected path string {path!r}, expected a 'name1.name2' or '.name1.name2' or "
                         "'{name1.name2}' or '{.name1.name2}'", DOCS)
    return "{.%s}" % (m.group(1) or m.group(2))


def parse_columns(spec: str) -> list[Column]:
    """``HEADER:PATH,...`` (kubectl splits on every comma; here commas inside ``[...]``,
    ``(...)`` and quotes stay in their path, so unions and filters work)."""
    if not spec:
        raise UsageError("custom-columns format specified but no custom columns given",
                         "e.g. -o custom-columns=PORT:.local_port,CONTAINER:.processes[0].container")
    columns = []
    for part in _split_columns(spec):
        header, colon, path = part.partition(":")
        if not colon:
            raise UsageError(f"unexpected custom-columns spec: {part}, expected <header>:<json-path-expr>",
                             "e.g. -o custom-columns=PORT:.local_port,STATE:.state")
        columns.append(_column(header, path))
    return columns


def parse_columns_file(content: str) -> list[Column]:
    """kubectl's custom-columns file: a line of headers and a line of paths, both
    separated by whitespace."""
    lines = [line for line in content.splitlines() if line.strip()]
    if len(lines) < 2:
        raise UsageError("invalid template, missing " + ("spec" if lines else "header") + " line",
                         "a custom-columns file has a line of space-separated headers, then one of paths")
    headers, paths = lines[0].split(), lines[1].split()
    if len(headers) != len(paths):
        raise UsageError(f"number of headers ({len(headers)}) and field specifications ({len(paths)}) don't match",
                         "one path under each header")
    return [_column(h, p) for h, p in zip(headers, paths)]


def _column(header: str, path: str) -> Column:
    if not path:
        raise UsageError(f"custom column {header!r} has no path", "e.g. PORT:.local_port")
    return Column(header, Template(relaxed(path)))


def _split_columns(spec: str) -> list[str]:
    parts, depth, quote, start = [], 0, "", 0
    for i, c in enumerate(spec):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c in "[(":
            depth += 1
        elif c in "])":
            depth -= 1
        elif c == "," and depth <= 0:
            parts.append(spec[start:i])
            start = i + 1
    return [*parts, spec[start:]]


# --- printing -------------------------------------------------------------------------------

def jsonpath_text(template: Template, document: Any, allow_missing: bool = True) -> str:
    """``-o jsonpath``: as kubectl prints it (no newline added)."""
    return template.render(document, allow_missing)


def cell(column: Column, row: Any) -> str:
    """One custom-columns cell: the values the path finds, joined with commas; ``<none>``
    when it finds nothing (or null); maps and lists as JSON."""
    values = column.path.values(row)
    if not values:
        return NONE
    return ",".join(NONE if v is None else json_text(v) if type(v) in (dict, list) else text(v) for v in values)


def custom_columns_text(columns: Sequence[Column], rows: Iterable[Any], show_headers: bool = True) -> str:
    """``-o custom-columns``: one line per row, laid out as kubectl's tabwriter does."""
    body = [[cell(c, row) for c in columns] for row in rows]
    return kubectl_table([escape(c.header) for c in columns], body, show_headers)


def kubectl_table(headers: Sequence[str], rows: Sequence[Sequence[str]], show_headers: bool = True) -> str:
    """kubectl's table layout (cli-runtime's tabwriter: cells padded to the widest plus
    3, at least 6; the last column unpadded).  Cells must be escaped already."""
    lines = [*([headers] if show_headers else []), *rows]
    widths = [max(6, max(width(line[i]) for line in lines) + 3) for i in range(len(headers) - 1)] if lines else []
    return "\n".join(("".join(c + " " * (w - width(c)) for c, w in zip(line, widths)) + line[-1]).rstrip()
                     for line in lines)


# --- rows and sorting ---------------------------------------------------------------------------

def row(target: dict, record: Any) -> dict[str, Any]:
    """One row of a table view as custom-columns and --sort-by see it: the record's
    fields as ``-o json`` shows them, plus the ``target`` it came from."""
    data = to_dict(record)
    del data["type"]
    data["target"] = target
    return data


def row_paths(kind: str) -> list[str]:
    """The paths of one row of the ``socket`` or ``finding`` view, for completing
    custom-columns and --sort-by."""
    paths = [f".{name}" for name in RECORD_TYPES[kind]._fields]
    if kind == "socket":
        paths += [f".processes[0].{k}" for k in (*Process.__annotations__, "container")]
        paths += [f".timer.{k}" for k in Timer.__annotations__]
        paths += [f".peer.{k}" for k in ("kind", "namespace", "name")]  # named remote ends (peers.py)
    return paths + [f".target.{k}" for k in ("kind", "namespace", "name", "container", "node")]


def sort_rows(items: Sequence[T], template: Template, as_row: Callable[[T], Any] = lambda x: x) -> list[T]:
    """Items ordered by the first value ``template`` finds in each row, as kubectl's
    --sort-by: rows without one (or with null) first, numbers by value, strings in
    natural order (``a2`` before ``a10``); a stable sort.  A path that no row has is an
    error, as in kubectl (a typo would otherwise sort nothing, silently)."""
    keys, found = [], False
    for item in items:
        values = template.values(as_row(item))
        found = found or bool(values)
        keys.append(_sort_key(values[0]) if values else (0,))
    if items and not found:
        raise UsageError(f"couldn't find any field with path {template.text!r} in the list of objects",
                         "--sort-by takes a path within one row, e.g. --sort-by=.local_port")
    order = sorted(range(len(items)), key=keys.__getitem__)
    return [items[i] for i in order]


def row_sorter(template: Template, peer: Optional[Callable[[Any], Optional[dict]]] = None) -> Sorter:
    """The ``sort`` of the sockets table and the findings text, over the rows as the
    document shows them: a socket's row has its ``peer`` (``peer(socket)``, or null)."""
    def as_row(pair: Pair) -> dict[str, Any]:
        data = row(*pair)
        if pair[1].type == "socket":
            data["peer"] = peer(pair[1]) if peer is not None else None
        return data

    def sort(pairs: list[Pair]) -> list[Pair]:
        return sort_rows(pairs, template, as_row)
    return sort


_DIGIT_RUNS = re.compile(r"(\d+)")


def _sort_key(v: Any) -> tuple:
    if v is None:
        return (0,)
    if type(v) in (int, float):
        return (1, v)
    if isinstance(v, str):
        parts = _DIGIT_RUNS.split(v)  # text, digits, text, ...: same kinds at the same places
        return (2, tuple((int(p), len(p)) if i % 2 else p for i, p in enumerate(parts)))
    if type(v) is bool:
        return (3, v)
    return (4, json_text(v))
