"""kubectl's JSONPath templates (``-o jsonpath=``, custom-columns, ``--sort-by``) over
plain JSON data: dicts, lists, strings, numbers, booleans and None.

The dialect and its output follow ``k8s.io/client-go/util/jsonpath`` (parser.go,
jsonpath.go) as kubectl uses it, https://kubernetes.io/docs/reference/kubectl/jsonpath/:
text outside ``{...}`` is printed as it is; inside, ``$`` and ``@`` (the current object),
``.field`` (``\\.`` escapes a dot), ``..field`` (recursive descent), ``*`` and ``[*]``,
``[N]``, ``[start:end:step]`` (negative indices count from the end), ``['key']`` or
``["key"]``, unions ``[a,b]``, filters ``[?(@.x == "v")]`` with ``== != < <= > >=``
(``[?(@.x)]``: the field exists), quoted strings with Go's escapes (``{"\\n"}``),
numbers, ``true``/``false``, and ``{range EXPR}...{end}``.  The values of one
``{...}`` are joined with a space; maps and lists print as compact JSON with sorted
keys, null as ``null``.

Where this differs from kubectl, on purpose (each for a reason): docs/design.md,
"kubectl's output conventions".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, NamedTuple, Optional

from sockdebug_agent.render import escape

from .errors import UsageError
from .gotext import go_float, json_text

DOCS = "see https://kubernetes.io/docs/reference/kubectl/jsonpath/, e.g. '{.items[*].sockets[*].local_port}'"


class JsonPathError(UsageError):
    """A template that does not parse (``position`` set) or cannot be evaluated."""

    def __init__(self, what: str, template: str, position: Optional[int] = None, executing: bool = False):
        if executing:
            cause = f"error executing jsonpath {template}: {what}"
        elif position is None:
            cause = f"error parsing jsonpath {template}: {what}"
        else:
            shown = f"{template[:position]}>>{template[position:position + 1]}<<{template[position + 1:]}"
            cause = f"error parsing jsonpath {template}: {what} at character {position + 1}: {shown}"
        super().__init__(cause, DOCS)
        self.what, self.template, self.position = what, template, position


# --- nodes --------------------------------------------------------------------------------

class Field(NamedTuple):
    name: str  #: "" is the current object (``{.}``, ``{.['key']}``)


class Wildcard(NamedTuple):
    pass


class Index(NamedTuple):
    start: Optional[int]
    end: Optional[int]
    step: Optional[int]
    single: bool  #: ``[N]``: one element, not a slice


class Filter(NamedTuple):
    left: tuple
    op: Optional[str]  #: None: the left side exists
    right: tuple


class Recursive(NamedTuple):
    pass


class UnionOf(NamedTuple):
    branches: tuple  #: ``[a,b]``: each branch's values, one after the other


class Literal(NamedTuple):
    value: Any  #: a quoted string, number or boolean written in the template


class Text(NamedTuple):
    text: str  #: template text outside ``{...}``


class Action(NamedTuple):
    steps: tuple


class Range(NamedTuple):
    steps: tuple
    body: list


class _RangeStart(NamedTuple):
    steps: tuple
    position: int


class _End(NamedTuple):
    position: int


class _Word(NamedTuple):
    word: str  #: range | end, until the action is classified
    position: int


_OPERATORS = ("==", "!=", "<", "<=", ">", ">=")
_TERMINATORS = frozenset(" \t\r\n.,[]$@{}")
_DIGITS = frozenset("0123456789")
_SLICE = re.compile(r"(-?[0-9]*)(?::(-?[0-9]*))?(?::(-?[0-9]*))?")
_COMPARISON = re.compile(r"([^!<>=~]+)([!<>=~]+)(.+)")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", "'": "'",
            '"': '"'}


class Own(str):
    """A string written in the template (printed as it is, never escaped)."""

    __slots__ = ()


# --- parsing --------------------------------------------------------------------------------

class _Parser:
    def __init__(self, template: str) -> None:
        self.t = template

    def fail(self, what: str, position: int) -> None:
        raise JsonPathError(what, self.t, position)

    def template(self) -> list:
        """Text and ``{...}`` actions, ranges nested up to their ``{end}``."""
        t, pos, flat = self.t, 0, []
        while pos < len(t):
            brace = t.find("{", pos)
            if brace < 0:
                flat.append(Text(Own(t[pos:])))
                break
            if brace > pos:
                flat.append(Text(Own(t[pos:brace])))
            steps, pos = self.steps(brace + 1, len(t), opened_at=brace)
            flat.append(self.action(steps, brace))
        return self.nest(flat)

    def action(self, steps: list, brace: int) -> Any:
        words = [i for i, s in enumerate(steps) if type(s) is _Word]
        if not words:
            return Action(tuple(steps))
        first = steps[words[0]]
        if first.word == "range" and words == [0]:
            return _RangeStart(tuple(steps[1:]), brace)
        if first.word == "end" and len(steps) == 1:
            return _End(brace)
        self.fail(f"{first.word!r} must open its {{...}}" if first.word == "range" else "'end' must stand alone",
                  first.position)

    def nest(self, flat: list) -> list:
        root: list = []
        stack = [root]
        for item in flat:
            if type(item) is _RangeStart:
                body: list = []
                stack[-1].append(Range(item.steps, body))
                stack.append(body)
            elif type(item) is _End:
                if len(stack) == 1:
                    self.fail("not in range, nothing to end", item.position)
                stack.pop()
            else:
                stack[-1].append(item)
        return root  # an unclosed range runs to the end of the template, as in kubectl

    def steps(self, pos: int, end: int, opened_at: Optional[int] = None) -> tuple[list, int]:
        """The path inside ``{...}`` from ``pos``; with ``opened_at``, up to its ``}``
        (returns the position after it), else up to ``end`` (a part of a filter or union)."""
        t, out = self.t, []
        while True:
            if pos >= end:
                if opened_at is not None:
                    self.fail("unclosed action", opened_at)
                return out, pos
            c = t[pos]
            if c == "}" and opened_at is not None:
                return out, pos + 1
            if t.startswith("[?(", pos, end):
                pos = self.filter(pos, end, out)
            elif t.startswith("..", pos, end):
                if out and type(out[-1]) is Recursive:
                    self.fail("invalid multiple recursive descent", pos)
                out.append(Recursive())
                pos += 2
                if pos < end and (t[pos] == "_" or t[pos].isalnum()):
                    pos = self.field(pos, end, out)
            elif c in "\r\n":
                self.fail("unclosed action", opened_at if opened_at is not None else pos)
            elif c in " \t@$":
                pos += 1
            elif c == "[":
                pos = self.subscript(pos, end, out)
            elif c in "\"'":
                pos = self.quoted(pos, end, out)
            elif c == ".":
                pos = self.field(pos + 1, end, out)
            elif c in "+-" or c in _DIGITS:
                pos = self.number(pos, end, out)
            elif c == "_" or c.isalnum():
                pos = self.identifier(pos, end, out)
            else:
                self.fail(f"unrecognized character in action: {escape(c)!r}", pos)

    def field(self, pos: int, end: int, out: list) -> int:
        t, p = self.t, pos
        while p < end:
            if t[p] == "\\":
                p += 2
                continue
            if t[p] in _TERMINATORS:
                break
            p += 1
        p = min(p, end)
        name = t[pos:p].replace("\\", "")
        out.append(Wildcard() if name == "*" else Field(name))
        return p

    def number(self, pos: int, end: int, out: list) -> int:
        t, p = self.t, pos + 1
        while p < end and (t[p] in _DIGITS or t[p] == "."):
            p += 1
        word = t[pos:p]
        for kind in (int, float):
            try:
                out.append(Literal(kind(word)))
                return p
            except ValueError:
                pass
        self.fail(f"cannot parse number {word}", pos)
        return p

    def identifier(self, pos: int, end: int, out: list) -> int:
        t, p = self.t, pos
        while p < end and t[p] not in _TERMINATORS:
            p += 1
        word = t[pos:p]
        if word in ("true", "false"):
            out.append(Literal(word == "true"))
        elif word in ("range", "end"):
            out.append(_Word(word, pos))
        else:
            self.fail(f"unrecognized identifier {word}", pos)
        return p

    def quoted(self, pos: int, end: int, out: list) -> int:
        t, q, p = self.t, self.t[pos], pos + 1
        while p < end and t[p] != q:
            if t[p] == "\n":
                break
            p += 2 if t[p] == "\\" else 1
        if p >= end or t[p] != q:
            self.fail("unterminated quoted string", pos)
        try:
            out.append(Literal(Own(unquote(t[pos + 1:p]))))
        except ValueError as exc:
            self.fail(f"{exc} in the quoted string {t[pos:p + 1]}", pos)
        return p + 1

    def subscript(self, pos: int, end: int, out: list) -> int:
        t = self.t
        close = t.find("]", pos, end)
        newline = t.find("\n", pos, end)
        if close < 0 or 0 <= newline < close:
            self.fail("unterminated array", pos)
        inner = t[pos + 1:close]
        if "," in inner:
            branches, at = [], pos + 1
            for part in inner.split(","):
                lead = len(part) - len(part.lstrip())
                branches.append(tuple(self.index(part.strip(), at + lead)))
                at += len(part) + 1
            out.append(UnionOf(tuple(branches)))
        else:
            out.extend(self.index(inner, pos + 1))
        return close + 1

    def index(self, text: str, at: int) -> list:
        """One subscript: ``*``, a quoted key (a dotted path, as kubectl reads it), or a slice."""
        if text == "*":
            return [Wildcard()]
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return [Field(name) for name in dotted(text[1:-1])]
        m = _SLICE.fullmatch(text)
        if not text or m is None:
            self.fail(f"invalid array index {text!r}" if text else "empty array index", at)
        numbers = []
        for group in m.groups():
            if group in (None, ""):
                numbers.append(None)
            elif group == "-":
                self.fail(f"array index {text} is not a number", at)
            else:
                numbers.append(int(group))
        start, stop, step = numbers
        if step is not None and step <= 0:
            self.fail("step must be > 0", at)
        if start is not None and stop is not None and 0 <= stop < start:
            self.fail(f"starting index {start} is greater than ending index {stop}", at)
        return [Index(start, stop, step, ":" not in text)]

    def filter(self, pos: int, end: int, out: list) -> int:
        t, p, quote = self.t, pos + 3, None
        while True:
            if p >= end or t[p] == "\n":
                self.fail("unterminated filter", pos)
            c = t[p]
            if quote:
                if c == "\\":
                    p += 1
                elif c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == ")":
                break
            p += 1
        if p + 1 >= end or t[p + 1] != "]":
            self.fail("unclosed array expect ]", p + 1)
        inner_at, inner = pos + 3, t[pos + 3:p]
        m = _COMPARISON.fullmatch(inner)
        if m is None:
            left, _ = self.steps(inner_at, p)
            out.append(Filter(tuple(left), None, ()))
            return p + 2
        op = m.group(2)
        if op not in _OPERATORS:
            self.fail("regular expressions are not supported (kubectl neither): use jq" if op == "=~"
                      else f"unrecognized filter operator {op}", inner_at + m.start(2))
        left, _ = self.steps(inner_at, inner_at + m.end(1))
        right, _ = self.steps(inner_at + m.start(3), p)
        out.append(Filter(tuple(left), op, tuple(right)))
        return p + 2


def dotted(key: str) -> list[str]:
    """A quoted key as kubectl reads it, a path: ``a.b\\.c`` is fields a and b.c."""
    names, name, escaped = [], [], False
    for c in key:
        if escaped:
            name.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ".":
            names.append("".join(name))
            name = []
        else:
            name.append(c)
    return [*names, "".join(name)]


def unquote(raw: str) -> str:
    """Go's ``strconv.Unquote`` escapes: ``\\n \\t \\" \\' \\\\ \\xHH \\uHHHH \\UHHHHHHHH \\ooo``..."""
    if "\\" not in raw:
        return raw
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = raw[i + 1:i + 2]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        elif e and e in "xuU01234567":
            size, base, skip = ({"x": (2, 16, 2), "u": (4, 16, 2), "U": (8, 16, 2)}.get(e) or (3, 8, 1))
            digits = raw[i + skip:i + skip + size]
            try:
                code = int(digits, base) if len(digits) == size else -1
            except ValueError:
                code = -1
            if not 0 <= code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"invalid escape \\{e}{digits}")
            out.append(chr(code))
            i += skip + size
        else:
            raise ValueError(f"invalid escape \\{e}")
    return "".join(out)


# --- evaluation ------------------------------------------------------------------------------

class Template:
    """A parsed template: ``render`` prints it as kubectl's ``-o jsonpath`` does, ``find``
    gives the values of each part (what custom-columns and ``--sort-by`` use)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.nodes = _Parser(text).template()

    def find(self, data: Any, allow_missing: bool = True) -> list[list[Any]]:
        out: list[list[Any]] = []
        self._run(self.nodes, data, out, allow_missing)
        return out

    def values(self, data: Any, allow_missing: bool = True) -> list[Any]:
        """Every value the template finds, in order (text parts included)."""
        return [v for part in self.find(data, allow_missing) for v in part]

    def render(self, data: Any, allow_missing: bool = True) -> str:
        return "".join(" ".join(map(text, part)) for part in self.find(data, allow_missing))

    def _run(self, nodes: list, data: Any, out: list, allow_missing: bool) -> None:
        for node in nodes:
            kind = type(node)
            if kind is Text:
                out.append([node.text])
            elif kind is Action:
                out.append(self._walk([data], node.steps, allow_missing))
            else:
                for item in self._walk([data], node.steps, allow_missing):
                    self._run(node.body, item, out, allow_missing)

    def _walk(self, values: list, steps: tuple, allow_missing: bool) -> list:
        for step in steps:
            values = _STEPS[type(step)](self, values, step, allow_missing)
        return values

    def fail(self, what: str) -> JsonPathError:
        return JsonPathError(what, self.text, executing=True)

    def _field(self, values: list, node: Field, allow_missing: bool) -> list:
        if not node.name:
            return [v for v in values if v is not None]
        out = [v[node.name] for v in values if type(v) is dict and node.name in v]
        if not out and values and not allow_missing:
            raise self.fail(f"{node.name} is not found")
        return out

    def _wildcard(self, values: list, node: Wildcard, allow_missing: bool) -> list:
        out: list = []
        for v in values:
            if type(v) is dict:
                out.extend(v.values())
            elif type(v) is list:
                out.extend(v)
        return out

    def _lists(self, values: list, why: str = "") -> Iterator[list]:
        """The lists among ``values`` (nulls are skipped); anything else is an error."""
        for v in values:
            if v is None:
                continue
            if type(v) is not list:
                raise self.fail(f"{_kind(v)} is not an array{why}")
            yield v

    def _index(self, values: list, node: Index, allow_missing: bool) -> list:
        out: list = []
        for v in self._lists(values):
            n = len(v)
            start = node.start or 0
            start = start + n if start < 0 else start
            stop = start + 1 if node.single else n if node.end is None else node.end
            stop = stop + n if stop < 0 and not node.single else stop
            if start == stop:
                continue
            if not (0 <= start < n and 0 <= stop <= n and start <= stop):
                if not allow_missing:
                    raise self.fail(f"array index out of bounds: index {start if not 0 <= start < n else stop - 1}, "
                                    f"length {n}")
                if node.single:
                    continue
                start, stop = max(start, 0), min(max(stop, 0), n)
            out.extend(v[start:stop:node.step or 1])
        return out

    def _filter(self, values: list, node: Filter, allow_missing: bool) -> list:
        out: list = []
        for v in self._lists(values, " and cannot be filtered"):
            for item in v:
                try:
                    lefts = self._walk([item], node.left, allow_missing)
                except JsonPathError:
                    if node.op is not None:
                        raise
                    lefts = []
                if node.op is None:
                    if lefts:
                        out.append(item)
                    continue
                rights = self._walk([item], node.right, allow_missing) if lefts else []
                if not lefts or not rights:
                    continue
                if len(lefts) > 1 or len(rights) > 1:
                    raise self.fail("can only compare one element at a time")
                if compare(lefts[0], node.op, rights[0]):
                    out.append(item)
        return out

    def _recursive(self, values: list, node: Recursive, allow_missing: bool) -> list:
        """Every non-empty object and array below (and including) each value, in
        pre-order, as kubectl's evalRecursive; without recursion (deep data is fine)."""
        out: list = []
        stack = list(reversed(values))
        while stack:
            v = stack.pop()
            if type(v) is dict and v:
                out.append(v)
                stack.extend(reversed(list(v.values())))
            elif type(v) is list and v:
                out.append(v)
                stack.extend(reversed(v))
        return out

    def _union(self, values: list, node: UnionOf, allow_missing: bool) -> list:
        return [x for branch in node.branches for x in self._walk(values, branch, allow_missing)]

    def _literal(self, values: list, node: Literal, allow_missing: bool) -> list:
        return [node.value] if type(node.value) is Own else [node.value] * len(values)


_STEPS = {Field: Template._field, Wildcard: Template._wildcard, Index: Template._index, Filter: Template._filter,
          Recursive: Template._recursive, UnionOf: Template._union, Literal: Template._literal}


def _kind(v: Any) -> str:
    return {dict: "an object", str: "a string", bool: "a boolean"}.get(type(v), "a number")


def _number(v: Any) -> bool:
    return type(v) in (int, float)


def compare(a: Any, op: str, b: Any) -> bool:
    """A filter's comparison: numbers with numbers, strings with strings, booleans for
    equality; anything else is unequal and unordered."""
    comparable = ((_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str))
                  or (type(a) is bool and type(b) is bool and op in ("==", "!=")))
    if comparable:
        return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    return op == "!="


# --- output ---------------------------------------------------------------------------------

def text(v: Any) -> str:
    """One value as kubectl prints it, escaped for a terminal (template text is not)."""
    if type(v) is Own:
        return v
    if isinstance(v, str):
        return escape(v)
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if type(v) is float:
        return go_float(v)
    if type(v) in (dict, list):
        return json_text(v)
    return escape(v)
