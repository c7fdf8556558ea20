"""Go's formatting of JSON values, as kubectl prints them in jsonpath output: compact JSON
with sorted keys (``json.Marshal`` of a map) and ``%v`` of a float64.  Apart from the
template language (jsonpath.py) because it is kubectl's printing, not its parsing."""

from __future__ import annotations

import json
from typing import Any


def json_text(v: Any) -> str:
    """Compact JSON with sorted keys (Go's json.Marshal of a map); characters ``escape``
    would escape become JSON ``\\uNNNN`` escapes, so the text stays valid JSON."""
    out = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if out.isprintable():
        return out
    return "".join(c if c.isprintable() else _json_escape(c) for c in out)


def _json_escape(c: str) -> str:
    code = ord(c)
    if code > 0xFFFF:  # a surrogate pair, as JSON spells characters above the BMP
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def go_float(f: float) -> str:
    """Go's ``%v`` of a float64: the shortest digits, in ``%e`` form for exponents below
    -4 or from 6 on (``1e+06``, ``1e-05``), else plain (``100``, ``0.052``)."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    sign = "-" if f < 0 or (f == 0 and str(f).startswith("-")) else ""
    if f == 0:
        return sign + "0"
    mantissa, _, exponent = repr(abs(f)).partition("e")  # repr: the shortest digits that round-trip
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    exp10 = int(exponent or 0) + len(whole) - 1 - (len(digits) - len(digits.lstrip("0")))
    digits = digits.strip("0")
    if exp10 < -4 or exp10 >= 6:
        rest = f".{digits[1:]}" if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{rest}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 < 0:
        return f"{sign}0.{'0' * (-exp10 - 1)}{digits}"
    whole, fraction = digits[:exp10 + 1].ljust(exp10 + 1, "0"), digits[exp10 + 1:]
    return f"{sign}{whole}{'.' + fraction if fraction else ''}"
