"""kubectl's JSONPath dialect (plugin/jsonpath.py) against kubectl's own documentation:
every example of https://kubernetes.io/docs/reference/kubectl/jsonpath/ on the page's
input, the ``kubectl get`` examples, then sockdebug's documents, output formatting,
errors with their positions, and the documented differences from kubectl."""

from __future__ import annotations

import json

import pytest
from sockdebug_plugin import render
from sockdebug_plugin.errors import UsageError
from sockdebug_plugin.gotext import go_float
from sockdebug_plugin.jsonpath import JsonPathError, Template, unquote
from sockdebug_plugin.printers import relaxed
from test_render import API, SOCKETS, result

# The jsonpath page's input, as the page gives it.
KUBE = json.loads("""{
  "kind": "List",
  "items":[
    {"kind":"None", "metadata":{"name":"127.0.0.1", "labels":{"kubernetes.io/hostname":"127.0.0.1"}},
     "status":{"capacity":{"cpu":"4"}, "addresses":[{"type": "LegacyHostIP", "address":"127.0.0.1"}]}},
    {"kind":"None", "metadata":{"name":"127.0.0.2"},
     "status":{"capacity":{"cpu":"8"},
               "addresses":[{"type": "LegacyHostIP", "address":"127.0.0.2"},
                            {"type": "another", "address":"127.0.0.3"}]}}
  ],
  "users":[
    {"name": "myself", "user": {}},
    {"name": "e2e", "user": {"username": "admin", "password": "secret"}}
  ]
}""")


def render_(template: str, data=KUBE, **kw) -> str:
    return Template(template).render(data, **kw)


@pytest.mark.parametrize(("template", "expected"), [
    # the page's table, function by function (maps print as JSON, as kubectl does since 1.20;
    # the page still shows Go's map[cpu:4])
    ("kind is {.kind}", "kind is List"),
    ("{.kind}", "List"),
    ("{['kind']}", "List"),
    ("{..name}", "127.0.0.1 127.0.0.2 myself e2e"),
    ("{.items[*].metadata.name}", "127.0.0.1 127.0.0.2"),
    ("{.users[0].name}", "myself"),
    ("{.items[*]['metadata.name', 'status.capacity']}", '127.0.0.1 127.0.0.2 {"cpu":"4"} {"cpu":"8"}'),
    ('{.users[?(@.name=="e2e")].user.password}', "secret"),
    ("{range .items[*]}[{.metadata.name}, {.status.capacity}] {end}",
     '[127.0.0.1, {"cpu":"4"}] [127.0.0.2, {"cpu":"8"}] '),
    ("{.items[0].metadata.labels.kubernetes\\.io/hostname}", "127.0.0.1"),
    ("{.items[*].metadata.labels['kubernetes\\.io/hostname']}", "127.0.0.1"),
    # the page's kubectl examples
    ("{.items[0].metadata.name}", "127.0.0.1"),
    ('{range .items[*]}{.metadata.name}{"\\t"}{.status.capacity.cpu}{"\\n"}{end}', "127.0.0.1\t4\n127.0.0.2\t8\n"),
    ("{range .items[*]}{.metadata.name}{'\\t'}{.kind}{'\\n'}{end}", "127.0.0.1\tNone\n127.0.0.2\tNone\n"),
    # $ and @ are optional; slices, negative indices, steps, unions, wildcards
    ("{$.kind}", "List"),
    ("{@.users[1].name}", "e2e"),
    ("{.users[-1].name}", "e2e"),
    ("{.users[-2:].name}", "myself e2e"),
    ("{.users[0:1].name}", "myself"),
    ("{.users[::2].name}", "myself"),
    ("{.users[0,1].name}", "myself e2e"),
    ("{.items[*].status.addresses[*].address}", "127.0.0.1 127.0.0.2 127.0.0.3"),
    ("{.items[1].status.addresses[?(@.type!='LegacyHostIP')].address}", "127.0.0.3"),
    ("{.items[*].status.addresses[?(@.type=='another')].address}", "127.0.0.3"),
    ("{.users[?(@.user.password)].name}", "e2e"),  # exists
    ("{.users[1].user.*}", "admin secret"),
    ("{.users[*].user}", '{} {"password":"secret","username":"admin"}'),
    ("{.items[0].status.addresses}", '[{"address":"127.0.0.1","type":"LegacyHostIP"}]'),
    ("{range .items[*]}{range .status.addresses[*]}{.address}{','}{end}{end}", "127.0.0.1,127.0.0.2,127.0.0.3,"),
    ("{range .users[*]}{.name}{end} after", "myselfe2e after"),
    ('{"{"}{.kind}{"}"}', "{List}"),
    ("{.nosuch} and {.users[5].name}", " and "),  # missing keys and indices are allowed by default
    ("plain text", "plain text"),
    ("{.kind}\\n", "List\\n"),  # as in kubectl, only quoted text in {...} has escapes
])
def test_kubectl_documented_examples(template, expected):
    assert render_(template) == expected


@pytest.mark.parametrize(("template", "expected"), [
    ("{.n[?(@.v > 2)].v}", "3 10"),
    ("{.n[?(@.v >= 3)].v}", "3 10"),
    ("{.n[?(@.v < 3)].v}", "1"),
    ("{.n[?(@.v <= 3)].v}", "1 3"),
    ("{.n[?(@.v == 10)].v}", "10"),
    ("{.n[?(@.v != 10)].v}", "1 3 abc"),  # a string is not a number: unequal
    ("{.n[?(@.v == 'abc')].v}", "abc"),
    ("{.n[?(@.v > 'a')].v}", "abc"),
    ("{.n[?(@.f == 1.5)].f}", "1.5"),
    ("{.n[?(@.b == true)].v}", "1"),
    ("{.n[?(@.b == false)].v}", "3"),
    ("{.n[?(@.none != 1)].v}", "10"),  # null is no number
])
def test_filter_comparisons(template, expected):
    data = {"n": [{"v": 1, "b": True}, {"v": 3, "b": False, "f": 1.5}, {"v": 10, "none": None}, {"v": "abc"}]}
    assert render_(template, data) == expected


@pytest.mark.parametrize(("value", "text"), [
    (8080, "8080"), (True, "true"), (False, "false"), (None, "null"), (0.052, "0.052"), (89.0625, "89.0625"),
    (100.0, "100"), (1e6, "1e+06"), (1234567.5, "1.2345675e+06"), (1e-05, "1e-05"), (0.0001, "0.0001"),
    ("plain", "plain"), ({"b": 1, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'), ([], "[]"), ("ünï", "ünï"),
])
def test_values_print_as_kubectl(value, text):
    assert render_("{.v}", {"v": value}) == text


def test_go_float_matches_go():
    # fmt.Sprint(float64) for these, as Go prints them
    cases = [(0.0, "0"), (-0.0, "-0"), (3.5, "3.5"), (120.0, "120"), (123456.0, "123456"), (1e21, "1e+21"),
             (9007199254740992.0, "9.007199254740992e+15"), (1.5e-07, "1.5e-07"), (-2.25, "-2.25"),
             (100000.5, "100000.5")]
    for f, want in cases:
        assert go_float(f) == want, f


# --- sockdebug's documents -------------------------------------------------------------------

def two_containers():
    """A SocketReport of one pod with two containers (app and sidecar), as -o json prints it."""
    return render.document([result(SOCKETS)])


def test_local_ports_of_a_two_container_pod():
    doc = two_containers()
    assert render_("{.items[*].sockets[*].local_port}", doc) == " ".join(str(s.local_port) for s in SOCKETS)
    listening = [s for s in SOCKETS if s.state == "LISTEN"]
    assert render_('{.items[*].sockets[?(@.state=="LISTEN")].local_port}', doc) == \
        " ".join(str(s.local_port) for s in listening)
    assert render_('{.items[*].sockets[?(@.processes[0].container=="sidecar")].local_port}', doc) == \
        "8443 15000 4250"
    assert render_("{range .items[*].sockets[*]}{.netid}/{.local_port}{'\\n'}{end}", doc).splitlines()[:2] == \
        ["tcp/8080", "tcp/9090"]
    assert render_("{.items[0].target.name}", doc) == API["name"]
    assert render_("{.items[*].sockets[4].timer.name}", doc) == "keepalive"
    assert render_("{.items[*].sockets[*].processes[0].comm}", doc).split() == \
        [s.processes[0]["comm"] for s in SOCKETS if s.processes]


def test_data_strings_are_escaped_template_text_is_not():
    data = {"items": [{"comm": "evil\x1b]0;x\x07\n", "raw": "a\udcffb", "obj": {"k": "v\x1b\u202e"}}]}
    out = render_('{range .items[*]}{.comm}{"\\t"}{.raw}{"\\n"}{.obj}{end}', data)
    assert out == 'evil\\x1b]0;x\\x07\\x0a\ta\\xffb\n{"k":"v\\u001b\\u202e"}'
    assert json.loads(out.splitlines()[1]) == {"k": "v\x1b\u202e"}  # still JSON


# --- missing keys and bounds --------------------------------------------------------------------

def test_missing_keys_allowed_by_default_and_errors_when_not():
    assert render_("{.users[*].nosuch}") == ""
    with pytest.raises(JsonPathError, match="nosuch is not found"):
        render_("{.users[*].nosuch}", allow_missing=False)
    with pytest.raises(JsonPathError, match="array index out of bounds: index 5, length 2"):
        render_("{.users[5]}", allow_missing=False)
    assert render_("{.users[1:9].name}") == "e2e"  # a slice past the end is cut, as in Python


def test_runtime_errors_say_what():
    with pytest.raises(JsonPathError) as err:
        render_("{.kind[0]}")
    assert err.value.cause == "error executing jsonpath {.kind[0]}: a string is not an array"
    with pytest.raises(JsonPathError, match="one element at a time"):
        render_("{.items[?(@.status.addresses[*].type=='x')]}")
    assert isinstance(err.value, UsageError) and err.value.exit_code == 2


# --- parse errors: what and where ------------------------------------------------------------------

@pytest.mark.parametrize(("template", "what", "where"), [
    ("{.items[*.x}", "unterminated array", 8),
    ("{.items[*].x", "unclosed action", 1),
    ("{.a}{.b\n}", "unclosed action", 5),
    ("{.a[?(@.x==1}", "unterminated filter", 4),
    ("{.a[?(@.x==1)}", "unclosed array expect ]", 14),
    ("{.a[?(@.x=~'y')]}", "regular expressions are not supported", 10),
    ("{.a[?(@.x=1)]}", "unrecognized filter operator =", 10),
    ("{.a[x]}", "invalid array index 'x'", 5),
    ("{.a[]}", "empty array index", 5),
    ("{.a[1:2:0]}", "step must be > 0", 5),
    ("{.a[3:1]}", "starting index 3 is greater than ending index 1", 5),
    ("{.a[-:1]}", "array index -:1 is not a number", 5),
    ("{'abc}", "unterminated quoted string", 2),
    ('{"\\q"}', "invalid escape \\q", 2),
    ("{.a b}", "unrecognized identifier b", 5),
    ("{.a % b}", "unrecognized character in action: '%'", 5),
    ("{1.2.3}", "cannot parse number 1.2.3", 2),
    ("{....a}", "invalid multiple recursive descent", 4),
    ("{end}", "not in range, nothing to end", 1),
    ("{range .a}{.b}{end}{end}", "not in range, nothing to end", 20),
    ("{.a range .b}", "'range' must open its {...}", 5),
    ("{end .a}", "'end' must stand alone", 2),
])
def test_parse_errors_say_what_and_where(template, what, where):
    with pytest.raises(JsonPathError) as err:
        Template(template)
    e = err.value
    assert e.what.startswith(what) and e.position == where - 1, (e.what, e.position)
    assert e.cause.startswith(f"error parsing jsonpath {template}: {what}")
    assert f"at character {where}: " in e.cause
    marked = e.cause.split(f"at character {where}: ", 1)[1]
    assert marked.replace(">>", "", 1).replace("<<", "", 1) == template  # the template, marked where it broke
    assert e.hint and "kubernetes.io/docs/reference/kubectl/jsonpath" in e.hint


def test_an_unclosed_range_runs_to_the_end_as_in_kubectl():
    assert render_("{range .users[*]}{.name} ") == "myself e2e "


def test_unquote_is_gos():
    assert unquote(r"a\tb\n\\\"\'\x41\u00e9\U0001F600\101") == "a\tb\n\\\"'A\u00e9\U0001F600A"
    for bad in (r"\q", r"\x4", r"\ud800", "\\"):
        with pytest.raises(ValueError):
            unquote(bad)


@pytest.mark.parametrize(("path", "expected"), [
    ("metadata.name", "{.metadata.name}"), (".metadata.name", "{.metadata.name}"),
    ("{metadata.name}", "{.metadata.name}"), ("{.metadata.name}", "{.metadata.name}"),
    (".processes[0].container", "{.processes[0].container}"), ("..name", "{..name}"),
])
def test_relaxed_paths_are_kubectls(path, expected):
    assert relaxed(path) == expected


def test_relaxed_path_refuses_braces_inside():
    with pytest.raises(UsageError, match="unexpected path string"):
        relaxed("{.a}{.b}")


def test_deep_data_does_not_recurse():
    deep: dict = {"name": "bottom"}
    for _ in range(5000):
        deep = {"x": deep}
    assert render_("{..name}", deep) == "bottom"
