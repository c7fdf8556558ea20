"""kubectl's output conventions over sockdebug's documents (plugin/printers.py): -o
parsing, custom-columns (``kubectl get -h``'s and the kubectl reference's examples on an
equivalent document, then socket rows), kubectl's table layout, --no-headers and
--sort-by (kubectl's sorter: missing first, numbers by value, natural string order)."""

from __future__ import annotations

import json
import re

import pytest
from sockdebug_plugin import choices, printers, render
from sockdebug_plugin.errors import UsageError
from sockdebug_plugin.jsonpath import JsonPathError
from test_render import API, API2, FINDINGS, SOCKETS, result

POD = {"metadata": {"name": "submit-queue", "resourceVersion": "610995"},
       "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}, {"name": "sidecar", "image": "envoy"}]},
       "status": {"containerStatuses": [{"restartCount": 10}]}}
PODS = [POD,
        {"metadata": {"name": "api-2", "resourceVersion": "7"}, "spec": {"containers": [{"name": "api"}]},
         "status": {"containerStatuses": [{"restartCount": 2}]}},
        {"metadata": {"name": "api-10", "resourceVersion": "12"}, "spec": {"containers": []}, "status": {}}]


def columns(spec: str):
    return printers.parse_output(f"custom-columns={spec}").columns


# --- kubectl's own examples ---------------------------------------------------------------------

def test_kubectl_reference_custom_columns_example():
    """kubectl get pods <pod-name> -o custom-columns=NAME:.metadata.name,RSRC:.metadata.resourceVersion"""
    text = printers.custom_columns_text(columns("NAME:.metadata.name,RSRC:.metadata.resourceVersion"), [POD])
    assert text == "NAME           RSRC\nsubmit-queue   610995"  # as the reference page shows it


def test_kubectl_reference_custom_columns_file_example():
    template = "NAME          RSRC\nmetadata.name metadata.resourceVersion\n"
    out = printers.parse_output("custom-columns-file=t.txt", read=lambda path: template)
    assert out.kind == "custom-columns" and [c.header for c in out.columns] == ["NAME", "RSRC"]
    assert printers.custom_columns_text(out.columns, [POD]) == "NAME           RSRC\nsubmit-queue   610995"


def test_kubectl_get_help_custom_columns_example():
    """kubectl get pod test-pod -o custom-columns=CONTAINER:.spec.containers[0].name,IMAGE:.spec.containers[0].image"""
    cols = columns("CONTAINER:.spec.containers[0].name,IMAGE:.spec.containers[0].image")
    assert printers.custom_columns_text(cols, PODS).splitlines() == [
        "CONTAINER   IMAGE", "app         nginx:1.25", "api         <none>", "<none>      <none>"]


def test_kubectl_get_help_sort_by_examples():
    """kubectl get pods --sort-by=.metadata.name / --sort-by='.status.containerStatuses[0].restartCount'"""
    by_name = printers.sort_rows(PODS, printers.parse_sort_by(".metadata.name"))
    assert [p["metadata"]["name"] for p in by_name] == ["api-2", "api-10", "submit-queue"]  # natural order
    by_restarts = printers.sort_rows(PODS, printers.parse_sort_by(".status.containerStatuses[0].restartCount"))
    assert [p["metadata"]["name"] for p in by_restarts] == ["api-10", "api-2", "submit-queue"]  # missing first


# --- -o ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["table", "wide", "json", "yaml", "jsonl"])
def test_plain_outputs(value):
    assert printers.parse_output(value) == printers.Output(value)


@pytest.mark.parametrize(("value", "says"), [
    ("xml", "unknown output format 'xml'"),
    ("jsonpath", "-o jsonpath needs its template after '='"),
    ("custom-columns-file", "-o custom-columns-file needs its file after '='"),
    ("jsonpath=", "no template given"),
    ("custom-columns=", "no custom columns given"),
    ("custom-columns=PORT", "expected <header>:<json-path-expr>"),
    ("custom-columns=PORT:", "has no path"),
    ("custom-columns=A:{.a}{.b}", "unexpected path string"),
    ("jsonpath={.items[*.x}", "error parsing jsonpath {.items[*.x}: unterminated array at character 8"),
    ("custom-columns=P:.processes[0.comm", "error parsing jsonpath {.processes[0.comm}: unterminated array"),
])
def test_bad_outputs_are_usage_errors_that_say_what(value, says):
    with pytest.raises(UsageError) as err:
        printers.parse_output(value)
    assert says in err.value.cause and err.value.hint and err.value.exit_code == 2


def test_unknown_output_names_every_choice():
    with pytest.raises(UsageError) as err:
        printers.parse_output("xml", plain=("table", "json"))
    assert err.value.hint == "use one of: table, json, jsonpath=, jsonpath-file=, custom-columns=, custom-columns-file="


def test_jsonpath_file_is_read_and_checked():
    out = printers.parse_output("jsonpath-file=/t", read=lambda path: "{.kind}\n")
    assert out.kind == "jsonpath" and out.template.render({"kind": "x"}) == "x\n"

    def missing(path):
        raise FileNotFoundError(2, "No such file or directory")
    with pytest.raises(UsageError, match="cannot read the jsonpath-file '/nope': No such file or directory"):
        printers.parse_output("jsonpath-file=/nope", read=missing)
    with pytest.raises(JsonPathError):
        printers.parse_output("jsonpath-file=/t", read=lambda path: "{.a")


def test_custom_columns_file_errors():
    for content, says in [("", "missing header line"), ("A B\n", "missing spec line"),
                          ("A B\n.a\n", "number of headers (2) and field specifications (1) don't match")]:
        with pytest.raises(UsageError, match=says.replace("(", r"\(").replace(")", r"\)")):
            printers.parse_output("custom-columns-file=f", read=lambda path, c=content: c)


def test_commas_inside_brackets_stay_in_their_path():
    cols = columns("NAMES:.users[0,1].name,E2E:.users[?(@.name=='e2e')].name")
    data = {"users": [{"name": "a"}, {"name": "e2e"}]}
    assert [printers.cell(c, data) for c in cols] == ["a,e2e", "e2e"]


# --- socket rows -----------------------------------------------------------------------------------

def results():
    return [result(SOCKETS[:6]), result(SOCKETS[6:], API2)]


def socket_rows(res):
    """The socket rows custom-columns and --sort-by see (found in the -o json document)."""
    from sockdebug_plugin import output

    view = output.report_view(res)
    return output.rows_of(view, view.document())


def test_issue_example_ports_and_containers_sorted():
    """-o custom-columns=PORT:.local_port,CONTAINER:.processes[0].container --sort-by=.local_port"""
    rows = printers.sort_rows(socket_rows(results()), printers.parse_sort_by(".local_port"))
    text = printers.custom_columns_text(columns("PORT:.local_port,CONTAINER:.processes[0].container"), rows)
    lines = text.splitlines()
    assert lines[0] == "PORT    CONTAINER"
    assert [line.split() for line in lines[1:]] == [
        [str(s.local_port), s.processes[0]["container"] if s.processes else "<none>"]
        for s in sorted(SOCKETS, key=lambda s: s.local_port)]
    assert printers.custom_columns_text(columns("PORT:.local_port"), rows, show_headers=False).splitlines() == \
        [str(s.local_port) for s in sorted(SOCKETS, key=lambda s: s.local_port)]


def test_rows_carry_the_target_and_the_json_fields():
    rows = socket_rows(results())
    assert len(rows) == len(SOCKETS) and "type" not in rows[0]
    assert rows[0]["target"] == API and rows[-1]["target"] == API2
    assert rows[2]["processes"][0]["container"] == "sidecar"
    text = printers.custom_columns_text(columns("POD:.target.name,PEER:.peer_address,OWNERS:.processes[*].comm,"
                                                "TIMER:.timer,UID:.uid"), rows)
    line = text.splitlines()[5]  # the keepalive ESTAB of SOCKETS[4]
    assert line.split() == ["api-7d9f8-abcde", "::1", "server", '{"expires_ms":68,"name":"keepalive","retrans":0}',
                            "1000"]
    assert text.splitlines()[7].split()[-1] == "<none>"  # uid null: <none>, not <nil>


def test_custom_columns_escape_target_text():
    rows = [{"comm": "evil\x1b[2J\nrow", "list": ["a\x1b"]}]
    text = printers.custom_columns_text(columns("COMM:.comm,LIST:.list"), rows)
    assert text.splitlines()[1] == 'evil\\x1b[2J\\x0arow   ["a\\u001b"]'


def test_sockets_table_sorted_across_targets():
    sort = printers.row_sorter(printers.parse_sort_by("{.local_port}"))
    text = render.sockets_table(results(), wide=False, color=False, sort=sort)
    ports = [int(line.split()[6].rsplit(":", 1)[1]) if ":" in line.split()[6] else int(line.split()[7])
             for line in text.splitlines()[1:]]
    assert ports == sorted(s.local_port for s in SOCKETS)
    pods = [line.split()[1] for line in text.splitlines()[1:]]
    assert pods[0] == API2["name"] and set(pods) == {API["name"], API2["name"]}  # interleaved by port
    bare = render.sockets_table(results(), wide=False, color=False, sort=sort, show_headers=False)
    assert bare.splitlines() == text.splitlines()[1:]


def test_sort_by_string_fields_natural_and_missing_first():
    sort = printers.row_sorter(printers.parse_sort_by(".processes[0].comm"))
    pairs = sort([(API, s) for s in SOCKETS])
    comms = [s.processes[0]["comm"] if s.processes else None for _, s in pairs]
    unowned = comms.count(None)
    assert unowned == 3 and comms[:unowned] == [None] * unowned  # no owner: first, as kubectl
    assert comms[unowned:] == sorted(comms[unowned:])


def test_sort_by_a_path_no_row_has_is_an_error():
    with pytest.raises(UsageError, match=re.escape("couldn't find any field with path '{.nosuch}'")):
        printers.sort_rows(socket_rows(results()), printers.parse_sort_by("nosuch"))
    assert printers.sort_rows([], printers.parse_sort_by("nosuch")) == []


@pytest.mark.parametrize(("values", "expected"), [
    ([10, 9, 100, 9.5], [9, 9.5, 10, 100]),  # numerically, not as text
    (["a10", "a2", "a1", "b"], ["a1", "a2", "a10", "b"]),  # natural order
    (["10.0.0.10", "10.0.0.9", "9.0.0.1"], ["9.0.0.1", "10.0.0.9", "10.0.0.10"]),
    (["01", "1", "001"], ["1", "01", "001"]),  # fewer leading zeros first
    (["x", None, 3, "MISSING"], [None, "MISSING", 3, "x"]),  # missing and null first, numbers before strings
])
def test_sort_order(values, expected):
    rows = [{"v": v} if v != "MISSING" else {} for v in values]
    got = [r.get("v", "MISSING") for r in printers.sort_rows(rows, printers.parse_sort_by(".v"))]
    assert got == expected


def test_sort_is_stable():
    rows = [{"k": 1, "i": i} for i in range(5)] + [{"k": 0, "i": 9}]
    assert [r["i"] for r in printers.sort_rows(rows, printers.parse_sort_by(".k"))] == [9, 0, 1, 2, 3, 4]


def test_findings_sorted_and_documents_sorted():
    sort = printers.row_sorter(printers.parse_sort_by(".id"))
    text = render.findings_text(result(FINDINGS), color=False, sort=sort)
    ids = [line.rsplit("[", 1)[1].rstrip("]") for line in text.splitlines() if not line.startswith(" ")]
    assert ids == sorted(f.id for f in FINDINGS)
    from sockdebug_plugin import output

    view = output.report_view(results())
    doc = view.document()
    output.sort_in_place(view, doc, printers.parse_sort_by(".local_port"))
    for item in doc["items"]:
        ports = [s["local_port"] for s in item["sockets"]]
        assert ports == sorted(ports)
    output.sort_in_place(view, doc, printers.parse_sort_by(".target.name"))
    assert json.dumps(doc)  # still a plain document


def test_jsonpath_text_over_the_document_has_no_newline_added():
    doc = render.document([result(SOCKETS[:2])])
    out = printers.parse_output("jsonpath={.items[*].sockets[*].local_port}")
    assert printers.jsonpath_text(out.template, doc) == "8080 9090"


def test_kubectl_table_layout():
    assert printers.kubectl_table(["A", "LONGER"], [["x", "y"], ["wide-cell", ""]]) == \
        "A           LONGER\nx           y\nwide-cell"
    assert printers.kubectl_table(["A", "B"], [["1", "2"]], show_headers=False) == "1     2"  # at least 6 wide
    assert printers.kubectl_table(["A"], []) == "A" and printers.kubectl_table(["A"], [], show_headers=False) == ""
    assert printers.kubectl_table(["N", "X"], [["服务", "1"]]).splitlines()[1] == "服务   1"  # two columns each, + 3


def test_output_names_for_help_and_completion():
    assert choices.output_names(choices.INSPECT_OUTPUTS) == [
        "table", "wide", "json", "yaml", "jsonl", "jsonpath=", "jsonpath-file=", "custom-columns=",
        "custom-columns-file="]


def test_row_paths_exist_in_rows():
    rows = socket_rows([result(SOCKETS)])
    for path in printers.row_paths("socket"):
        found = any(printers.parse_sort_by(path).values(r) for r in rows)
        # .extended, .skmem: with -e/-m only; .peer.*: named only when the run looked peers up
        assert found or path in (".extended", ".skmem") or path.startswith(".peer."), path
    assert ".processes[0].container" in printers.row_paths("socket") and ".id" in printers.row_paths("finding")
