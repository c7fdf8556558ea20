"""The one output function: every command prints its answer with ``emit``, in the shape
``-o``, ``--no-headers`` and ``--sort-by`` ask for.

A command describes its answer once, as a ``View``, and calls::

    output.emit(opts.printing, view)            # to stdout; emit(..., out=stream) elsewhere

``opts.printing`` is the ``options.Printing`` that ``options.build`` parsed (bad formats,
templates and sort paths were usage errors then, before any API call).  A ``View`` has:

``document()``
    what ``-o json``/``yaml`` print and ``-o jsonpath`` reads: a plain dict (lists, str,
    numbers, bool, None), built once per ``emit``.
``rows(document)``
    where the rows of the table view are in that document: ``(list, extra)`` pairs, each
    list holding row dicts and ``extra`` the fields every row of it gains (an item's
    ``target``).  ``custom-columns`` prints these rows (``{**row, **extra}``), sorted
    across lists as the tables are; with json, yaml and jsonpath ``--sort-by`` orders
    each list in place (an item's sockets stay in the item).  ``item_rows("sockets")``
    (each item's sockets, with the item's target) and ``top_rows("findings")`` (one list
    at the top) cover the reports here.
``table(style)``
    the text of ``table`` and ``wide`` (``Style``: wide, color, show_headers, and the
    sort path, a jsonpath ``Template`` over one row, or None), without the last newline.
``lines()``
    ``-o jsonl``: JSON lines, printed and flushed one by one as the iterable yields them
    (a stream may be endless; it is never sorted: --sort-by with jsonl is refused).

Each part may be None where the command does not offer the formats that read it (its
``-o`` choices say which): a stream that only prints jsonl is ``View(lines=...)``.
Text from the target is escaped by the table functions, ``custom-columns`` and
``jsonpath``; json and yaml carry it as data.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, TextIO

from sockdebug_agent.render import Sorter

from . import render
from .options import Printing

if TYPE_CHECKING:
    from .jsonpath import Template

# printers.py (and the jsonpath engine) load only for templates and sorts: a warm query
# printing a plain table never needs them.

RowLists = Callable[[dict], Iterable[tuple[list, dict]]]


class Style(NamedTuple):
    """How ``table``/``wide`` text is asked for."""

    wide: bool = False
    color: bool = False
    show_headers: bool = True
    sort: Optional[Template] = None  #: --sort-by, relative to one row


class View(NamedTuple):
    """One command's answer, in every shape ``emit`` can print (see the module)."""

    document: Optional[Callable[[], dict]] = None
    rows: Optional[RowLists] = None
    table: Optional[Callable[[Style], str]] = None
    lines: Optional[Callable[[], Iterable[str]]] = None


def item_rows(key: str) -> RowLists:
    """Rows in each item's ``key`` list (``items[*].sockets``), with the item's target."""
    def lists(doc: dict) -> Iterator[tuple[list, dict]]:
        for item in doc.get("items") or ():
            if item.get(key):
                yield item[key], {"target": item.get("target")}
    return lists


def top_rows(key: str) -> RowLists:
    """Rows in one list at the document's top (``findings``, ``items``)."""
    def lists(doc: dict) -> Iterator[tuple[list, dict]]:
        if doc.get(key):
            yield doc[key], {}
    return lists


def rows_of(view: View, doc: dict) -> list[dict]:
    """The rows of the table view as custom-columns and --sort-by see them."""
    return [{**row, **extra} for rows, extra in view.rows(doc) for row in rows] if view.rows else []


def sort_in_place(view: View, doc: dict, sort: Template) -> None:
    """--sort-by on the document: the rows of every list ordered together as kubectl's
    sorter does, each list keeping its own (a path that no row has is a usage error, as
    in kubectl, even when one list alone lacks it)."""
    from . import printers

    lists = list(view.rows(doc)) if view.rows else []
    tagged = [(i, row) for i, (rows, _) in enumerate(lists) for row in rows]
    ordered = printers.sort_rows(tagged, sort, lambda t: {**t[1], **lists[t[0]][1]})
    buckets: list[list] = [[] for _ in lists]
    for i, row in ordered:
        buckets[i].append(row)
    for (rows, _), bucket in zip(lists, buckets):
        rows[:] = bucket


def emit(printing: Printing, view: View, out: Optional[TextIO] = None) -> None:
    """Print ``view`` as ``printing`` says (the module says how each format reads it)."""
    out = out or sys.stdout
    kind = printing.kind
    if kind == "jsonl":
        for line in view.lines() if view.lines else ():
            out.write(line + "\n")
            out.flush()
        return
    if kind in ("table", "wide"):
        text = view.table(Style(kind == "wide", render.use_color(out), printing.show_headers, printing.sort))
        out.write(text + "\n" if text else "")
        out.flush()
        return
    from . import printers

    doc = view.document()
    if kind == "custom-columns":
        rows = rows_of(view, doc)
        if printing.sort is not None:
            rows = printers.sort_rows(rows, printing.sort)  # across items, as the tables are
        text = printers.custom_columns_text(printing.spec.columns, rows, printing.show_headers)
        out.write(text + "\n" if text else "")
    else:
        if printing.sort is not None:
            sort_in_place(view, doc, printing.sort)
        if kind == "jsonpath":
            out.write(printers.jsonpath_text(printing.spec.template, doc))  # kubectl adds no newline
        else:
            render.write_doc(doc, kind, out)
    out.flush()


def sorter(style: Style, peer: Optional[Callable[[Any], Optional[dict]]] = None) -> Optional[Sorter]:
    """The tables' reordering of (target, record) pairs for ``style.sort``, over the rows
    the document shows (``peer``: a socket's ``peer`` object, as ``peer_forms`` gives it)."""
    if style.sort is None:
        return None
    from . import printers

    return printers.row_sorter(style.sort, peer)


def peer_forms(peer: Optional[Callable[[Any], Any]]) -> tuple[Optional[Callable[[Any], Optional[dict]]],
                                                              Optional[Callable[[Any], Optional[str]]]]:
    """From ``peer`` (socket -> ``peers.Peer`` or None): the socket's ``peer`` object for
    documents and its name for tables (both None when nothing is named)."""
    if peer is None:
        return None, None

    def as_dict(s: Any) -> Optional[dict]:
        p = peer(s)
        return None if p is None else p.as_dict()

    def as_name(s: Any) -> Optional[str]:
        p = peer(s)
        return None if p is None else str(p)

    return as_dict, as_name


def report_view(results: list[render.Result], kind: str = "socket", findings: bool = False,
                peer: Optional[Callable[[Any], Any]] = None) -> View:
    """``inspect``: the SocketReport document, rows of one record ``kind`` (``socket`` or
    ``finding``), the report text; ``peer`` (socket -> ``peers.Peer`` or None) names
    remote addresses in the document (``peer`` objects) and the tables."""
    peer_dict, peer_name = peer_forms(peer)

    def table(style: Style) -> str:
        return render.report_text(results, wide=style.wide, color=style.color, show_headers=style.show_headers,
                                  findings=findings, sort=sorter(style, peer_dict), peer=peer_name)

    def lines() -> Iterator[str]:
        for res in results:
            for rec in res.records:
                yield render.jsonl_line(rec, res.target, len(results) > 1)

    return View(lambda: render.document(results, peer=peer_dict), item_rows(kind + "s"), table, lines)


def findings_view(report: Any, scope: dict[str, Any], document: Callable[[Any, dict], dict],
                  text: Callable[[Any, dict, bool], str]) -> View:
    """``sweep`` (and any ``findings.Report``): its document, rows of its ``findings``,
    and its text, with the findings in --sort-by order."""
    from .findings import finding_dict

    def table(style: Style) -> str:
        from . import printers

        shown = report
        if style.sort is not None:
            shown = report._replace(findings=printers.sort_rows(report.findings, style.sort, finding_dict))
        return text(shown, scope, style.color)

    return View(lambda: document(report, scope), top_rows("findings"), table)


# --- what completion offers for custom-columns, --sort-by and jsonpath ------------------------

#: command -> (the kind of its table rows, where those rows are in its -o json document)
ROWS = {"inspect": ("socket", ".items[*].sockets[*]"), "triage": ("report-finding", ".findings[*]"),
        "sweep": ("report-finding", ".findings[*]"), "agents": ("agent", ".items[*]")}


def row_paths(command: str) -> list[str]:
    """The paths of one row of ``command``'s table view (custom-columns, --sort-by)."""
    kind = ROWS.get(command, ("", ""))[0]
    if kind == "agent":
        from .agents import ROW_PATHS

        return list(ROW_PATHS)
    if kind == "report-finding":
        from .findings import FIELDS

        return [f".objects[0].{k}" if name == "objects" else f".{name}"
                for name in FIELDS for k in (("kind", "namespace", "name", "container", "role")
                                             if name == "objects" else ("",))]
    if kind:
        from .printers import row_paths as record_paths

        return record_paths(kind)
    return []


def document_paths(command: str) -> list[str]:
    """``row_paths`` as jsonpath templates over the whole document (``-o jsonpath=``)."""
    at = ROWS.get(command, ("", ""))[1]
    return ["{%s%s}" % (at, path) for path in row_paths(command)]
