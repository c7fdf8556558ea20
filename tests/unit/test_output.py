"""The one output function (plugin/output.py) over every format and every command's rows:
inspect's sockets, triage's findings, sweep's findings report, agents' rows; the options
that feed it (parsed before any API call or client import), and completion of formats,
columns and sort paths."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
import yaml
from sockdebug_plugin import agents, cli, complete, findings, flags, kube, options, output, triage
from sockdebug_plugin.errors import EXIT_USAGE, UsageError
from sockdebug_plugin.findings import Finding, Report, finding_dict
from sockdebug_plugin.options import Printing
from test_render import API, API2, SOCKETS, result

FORMATS = ("table", "wide", "json", "yaml", "jsonl", "jsonpath", "custom-columns")


def printing(command: str, *argv: str) -> Printing:
    opts = options.build(flags.parse([command, *(["pod/x"] if command in ("inspect", "triage") else []), *argv]))
    opts.validate()
    return opts.printing


def emit(p: Printing, view: output.View) -> str:
    out = io.StringIO()
    output.emit(p, view, out)
    return out.getvalue()


def inspect_view() -> output.View:
    return output.report_view([result(SOCKETS[:6]), result(SOCKETS[6:], API2)])


REPORT = Report(
    [Finding("service-port-not-listening", "critical", "Service api port 80 reaches nothing",
             [{"kind": "Service", "namespace": "shop", "name": "api", "role": "service"},
              {"kind": "Pod", "namespace": "shop", "name": "api-2", "container": "app"}],
             "nothing listens on 8080", "listen on 0.0.0.0:8080", {"port": 8080}),
     Finding("loopback-only", "warning", "api-10 listens on 127.0.0.1 only",
             [{"kind": "Pod", "namespace": "shop", "name": "api-10"}], "bound to loopback", "bind 0.0.0.0",
             {"port": 9090})], [], 2, 2)
SCOPE = {"namespaces": ["shop"], "selector": None, "via": "ephemeral", "services_checked": True, "elapsed_s": 1.5}


def sweep_view() -> output.View:
    return output.findings_view(REPORT, SCOPE, lambda r, s: findings.document(r, s, "SweepReport"), findings.text)


def triage_view() -> output.View:
    return triage.view(triage.Outcome("pod/api -n shop", REPORT, SCOPE, [], None, None))


def agents_view() -> output.View:
    pods = [{"metadata": {"name": n, "namespace": "shop"},
             "spec": {"ephemeralContainers": [{"name": f"sockdebug-{n}", "image": "sockdebug-agent:1",
                                               "command": ["sockdebug-agent", "serve", "--idle-timeout", t],
                                               "targetContainerName": "app",
                                               "env": [{"name": "SOCKDEBUG_PROFILE", "value": "general"}]}]},
             "status": {"ephemeralContainerStatuses": [{"name": f"sockdebug-{n}", "state": {
                 "running": {"startedAt": "2026-12-01T09:00:00Z"}}}]}}
            for n, t in (("web-10", "900"), ("web-2", "60"), ("api", "3600"))]
    return agents.view(agents.agent_rows(pods, now=agents.timestamp("2026-12-01T09:00:30Z")), namespaces=False)


VIEWS = {"inspect": inspect_view, "triage": triage_view, "sweep": sweep_view, "agents": agents_view}
PLAIN = {"inspect": flags.INSPECT_OUTPUT, "triage": flags.TRIAGE_OUTPUT, "sweep": flags.SWEEP_OUTPUT,
         "agents": flags.AGENTS_OUTPUT}
SORT_PATH = {"inspect": ".local_port", "triage": ".id", "sweep": ".id", "agents": ".pod"}


def template_for(command: str, kind: str) -> list[str]:
    path = SORT_PATH[command]
    if kind == "jsonpath":
        return [f"jsonpath={{{output.ROWS[command][1]}{path}}}"]
    if kind == "custom-columns":
        return [f"custom-columns=KEY:{path}"]
    return [kind]


@pytest.mark.parametrize("command", list(VIEWS))
@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_of_every_command(command, kind):
    """Each command prints each of its formats; json/yaml are its document, jsonpath and
    custom-columns find the same rows, --sort-by orders all of them alike."""
    if kind not in (*PLAIN[command].choices, "jsonpath", "custom-columns"):
        with pytest.raises(UsageError, match="unknown output format"):
            printing(command, "-o", kind)
        return
    view = VIEWS[command]()
    doc = view.document()
    rows = output.rows_of(view, doc)
    assert rows, f"{command} has no rows"
    p = printing(command, "-o", *template_for(command, kind))
    text = emit(p, view)
    if kind == "json":
        assert json.loads(text) == json.loads(json.dumps(doc))
    elif kind == "yaml":
        assert yaml.safe_load(text) == json.loads(json.dumps(doc))
    elif kind == "jsonl":
        lines = [json.loads(line) for line in text.splitlines()]
        assert len(lines) == sum(len(r.records) for r in [result(SOCKETS[:6]), result(SOCKETS[6:], API2)]) or \
            command == "triage"
        assert all("type" in line for line in lines)
    elif kind == "jsonpath":
        keys = [str(r[SORT_PATH[command][1:]]) for r in rows]
        assert text.split(" ") == keys and not text.endswith("\n")  # kubectl adds no newline
    elif kind == "custom-columns":
        lines = text.splitlines()
        assert lines[0] == "KEY" and lines[1:] == [str(r[SORT_PATH[command][1:]]) for r in rows]
    else:
        assert text.endswith("\n") and text.strip()
    if kind in ("jsonl", "table", "wide", "json", "yaml"):
        return
    # the same format, sorted: the keys in kubectl's order (numbers by value, strings naturally)
    sorted_text = emit(printing(command, "-o", *template_for(command, kind), "--sort-by", SORT_PATH[command]),
                       VIEWS[command]())
    keys = sorted_text.split(" ") if kind == "jsonpath" else sorted_text.splitlines()[1:]
    lists = [[str(r[SORT_PATH[command][1:]]) for r in rows] for rows, _ in view.rows(view.document())]
    if kind == "jsonpath":  # the document keeps each item's rows in the item: sorted within it
        assert keys == [k for keys_of in lists for k in sorted(keys_of, key=natural)]
    else:  # the table view: sorted across items
        assert keys == sorted((k for keys_of in lists for k in keys_of), key=natural)


def natural(key: str) -> tuple:
    """kubectl's order for these keys: numbers by value, strings with digit runs as numbers."""
    return (0, int(key)) if key.isdigit() else (1, tuple((0, int(p)) if p.isdigit() else (1, p)
                                                          for p in re.split(r"(\d+)", key)))


@pytest.mark.parametrize("command", list(VIEWS))
def test_no_headers_drops_the_header_lines(command):
    view = VIEWS[command]
    full = emit(printing(command, "-o", f"custom-columns=KEY:{SORT_PATH[command]}"), view())
    bare = emit(printing(command, "-o", f"custom-columns=KEY:{SORT_PATH[command]}", "--no-headers"), view())
    assert bare.splitlines() == full.splitlines()[1:]
    if command in ("inspect", "agents"):
        table = emit(printing(command), view()).splitlines()
        bare = emit(printing(command, "--no-headers"), view()).splitlines()
        assert [line.split() for line in bare] == [  # column widths come from the rows alone, as in kubectl
            line.split() for line in table if not line.startswith(("Netid", "Namespace", "POD", "#"))]


@pytest.mark.parametrize("command", ["triage", "sweep", "agents"])
def test_sorted_tables_and_documents_agree(command):
    """--sort-by orders the table view the way it orders the document's rows (one list of
    rows here; inspect's tables across targets: test_printers' sockets table test)."""
    p = printing(command, "-o", "json", "--sort-by", SORT_PATH[command])
    doc = json.loads(emit(p, VIEWS[command]()))
    keys = [r[SORT_PATH[command][1:]] for r in output.rows_of(VIEWS[command](), doc)]
    table = emit(printing(command, "--sort-by", SORT_PATH[command]), VIEWS[command]())
    positions = [table.index(str(k)) for k in keys]
    assert positions == sorted(positions), table


def test_document_sort_orders_rows_across_items_each_list_keeping_its_own():
    view = inspect_view()
    doc = view.document()
    output.sort_in_place(view, doc, options.printing(flags.INSPECT_OUTPUT, "json", sort_by=".local_port").sort)
    for item in doc["items"]:
        ports = [s["local_port"] for s in item["sockets"]]
        assert ports == sorted(ports)
    assert sum(len(i["sockets"]) for i in doc["items"]) == len(SOCKETS)


def test_a_sort_path_no_row_has_is_a_usage_error():
    with pytest.raises(UsageError, match="couldn't find any field with path"):
        emit(printing("inspect", "--sort-by", ".no_such_field"), inspect_view())


def test_rows_carry_their_target():
    rows = output.rows_of(inspect_view(), inspect_view().document())
    assert {r["target"]["name"] for r in rows} == {API["name"], API2["name"]}


def test_a_stream_view_prints_lines_as_they_come():
    seen = []

    def lines():
        for n in range(3):
            seen.append(n)
            yield json.dumps({"n": n})

    out = io.StringIO()
    output.emit(Printing("jsonl"), output.View(lines=lines), out)
    assert out.getvalue().splitlines() == ['{"n": 0}', '{"n": 1}', '{"n": 2}'] and seen == [0, 1, 2]


def test_sweep_table_lists_findings_in_sort_order():
    text = emit(printing("sweep", "--sort-by", ".severity"), sweep_view())
    assert text.index("[service-port-not-listening]") < text.index("[loopback-only]")  # critical < warning
    text = emit(printing("sweep", "--sort-by", ".id"), sweep_view())
    assert text.index("[loopback-only]") < text.index("[service-port-not-listening]")
    rows = output.rows_of(sweep_view(), sweep_view().document())
    assert rows == [finding_dict(f) for f in REPORT.findings]


# --- options: parsed before any API call ---------------------------------------------------------

@pytest.fixture
def forbid_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))

    def connect(*a, **kw):
        raise AssertionError("connected to a cluster")

    monkeypatch.setattr(kube, "connect", connect)


@pytest.mark.parametrize(("argv", "message"), [
    (["pod/x", "-o", "xml"], "unknown output format 'xml'"),
    (["pod/x", "-o", "jsonpath={.items[*"], "at character"),
    (["pod/x", "-o", "jsonpath="], "template format specified but no template given"),
    (["pod/x", "-o", "custom-columns=PORT"], "unexpected custom-columns spec: PORT"),
    (["pod/x", "-o", "jsonpath-file=/nonexistent/t"], "cannot read the jsonpath-file '/nonexistent/t'"),
    (["pod/x", "--sort-by", "{.a"], "jsonpath"),
    (["pod/x", "--sort-by", ""], "--sort-by needs a path"),
    (["pod/x", "-o", "jsonl", "--sort-by", ".local_port"], "--sort-by cannot sort a stream"),
    (["pod/x", "--watch", "-o", "json"], "--watch redraws a table"),
    (["pod/x", "--idle-timeout", "0"], "--idle-timeout must be a finite number"),
    (["pod/x", "--idle-timeout", "-5"], "--idle-timeout must be a finite number"),
    (["pod/x", "--idle-timeout", "inf"], "--idle-timeout must be a finite number"),
    (["pod/x", "--idle-timeout", "nan"], "--idle-timeout must be a finite number"),
    (["pod/x", "--idle-timeout", "1e10"], "--idle-timeout must be a finite number"),
    (["sweep", "-o", "wide"], "unknown output format 'wide'"),
    (["agents", "-o", "jsonl"], "unknown output format 'jsonl'"),
    (["triage", "pod/x", "-o", "custom-columns=A:.x[?(@"], "unterminated filter at character 4"),
])
def test_bad_formats_templates_and_numbers_exit_2_before_any_api_call(forbid_cluster, capsys, argv, message):
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: ") and message in "\n".join(err), err
    assert err[-1].startswith("hint: ")


def test_a_template_error_says_where():
    with pytest.raises(UsageError) as info:
        options.printing(flags.INSPECT_OUTPUT, "jsonpath={.items[*].sockets[?(@.state==)]}")
    assert "position" in info.value.cause or "at " in info.value.cause


def test_bad_templates_are_refused_without_importing_the_client():
    """The usage error comes from parsing alone: no Kubernetes client, urllib3 or yaml loaded."""
    code = ("import sys\nfrom sockdebug_plugin import cli\n"
            "for argv in (['pod/x', '-o', 'jsonpath={.a'], ['agents', '-o', 'custom-columns=A'],\n"
            "             ['sweep', '--sort-by', '{.x'], ['triage', 'pod/x', '-o', 'nope']):\n"
            "    assert cli.main(argv) == 2, argv\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3', 'yaml')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"KUBECONFIG": "/nonexistent", "PATH": ""})
    assert out.stdout.strip() == "[]", out.stderr


def test_plain_tables_never_load_the_printers():
    """A warm query printing a plain table does not pay for the jsonpath engine."""
    code = ("import sys\nfrom sockdebug_plugin import options, flags\n"
            "o = options.build(flags.parse(['pod/x', '--listening', '--no-headers'])); o.validate()\n"
            "print(sorted(m for m in sys.modules if m.endswith(('printers', 'jsonpath'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_idle_timeout_reaches_the_serve_command():
    opts = options.build(flags.parse(["pod/x", "--idle-timeout", "3600"]))
    opts.validate()
    assert opts.agent.idle_timeout == 3600.0
    from sockdebug_plugin import inject

    assert inject.serve_command(opts.agent.idle_timeout)[-1] == "3600"
    assert inject.serve_command(0.5)[-1] == "0.5"
    assert agents.idle_timeout(inject.serve_command(2.25)) == 2.25
    assert options.build(flags.parse(["pod/x"])).agent.idle_timeout == inject.IDLE_TIMEOUT_S


# --- completion --------------------------------------------------------------------------------------

def test_completion_of_custom_columns_paths():
    got = complete.candidates(["pod/x", "-o", "custom-columns=PORT:.local_p"])
    assert got == ["custom-columns=PORT:.local_port"]
    got = complete.candidates(["pod/x", "-o", "custom-columns=PORT:.local_port,CON"])
    assert "custom-columns=PORT:.local_port,CONTAINER:.processes[0].container" in got
    assert all(c.startswith("custom-columns=PORT:.local_port,") for c in got)
    assert "custom-columns=POD:.pod" in complete.candidates(["agents", "-o", "custom-columns=PO"])
    assert "custom-columns=FIX:.fix" in complete.candidates(["sweep", "-o", "custom-columns=F"])


def test_completion_of_sort_paths_and_jsonpath():
    assert complete.candidates(["pod/x", "--sort-by", ".local_p"]) == [".local_port"]
    assert ".idle_left_min_s" in complete.candidates(["agents", "--sort-by", ".idle"])
    assert complete.candidates(["pod/x", "-o", "jsonpath={.items[*].sockets[*].local_p"]) == [
        "jsonpath={.items[*].sockets[*].local_port}"]
    assert "jsonpath={.items[*].pod}" in complete.candidates(["agents", "-o", "jsonpath="])


@pytest.mark.parametrize("command", list(VIEWS))
def test_every_completed_row_path_is_a_path_of_a_row(command):
    """What completion offers for custom-columns and --sort-by exists in the rows the
    command prints (or may: optional fields)."""
    paths = output.row_paths(command)
    assert paths
    rows = output.rows_of(VIEWS[command](), VIEWS[command]().document())
    first = {p.split("[")[0].split(".")[1] for p in paths}
    assert first <= set().union(*(r.keys() for r in rows)) | {"extended", "skmem", "target"}, first


def test_new_commands_are_completed():
    assert {"agents", "stop"} <= set(complete.candidates([""]))
    assert complete.candidates(["agents", ""]) == []  # no TARGET
    assert "--no-headers" in complete.candidates(["agents", "--no"])
    assert complete.candidates(["stop", "--al"]) == ["--all-namespaces", "--all"]


def test_whatever_the_document_adds_is_a_column_and_a_sort_key():
    """Rows are found in the document: a field a command adds to its -o json (inspect's
    `peer`, say) is at once a custom-columns path and a --sort-by key."""
    from sockdebug_plugin.peers import Peer

    view = output.report_view([result(SOCKETS[:6]), result(SOCKETS[6:], API2)],
                              peer=lambda s: Peer("pod", "shop", f"peer-{s.peer_port}"))
    text = emit(printing("inspect", "-o", "custom-columns=PORT:.local_port,PEER:.peer.name", "--sort-by",
                         ".peer.name", "--no-headers"), view)
    peers = [line.split()[1] for line in text.splitlines()]
    assert peers == sorted(peers, key=natural) and "peer-51234" in peers and "peer-40000" in peers


def test_the_table_sorts_by_the_peer_it_shows():
    """--sort-by=.peer.name on the plain table: the rows are ordered by the name in the
    PEER column, which only the run's lookup knows (not the agent's records); two
    lookups naming the ports in opposite orders give opposite row orders."""
    from sockdebug_plugin.peers import Peer

    def ports(lookup):
        view = output.report_view([result(SOCKETS)],
                                  peer=lambda s: Peer("pod", "shop", lookup(s.peer_port)) if s.peer_port else None)
        text = emit(printing("inspect", "--sort-by", ".peer.name", "--no-headers"), view)
        names = [w for line in text.splitlines() for w in line.split() if w.startswith("pod/shop/")]
        assert len(names) >= 3 and names == sorted(names)
        return [name.rsplit(":", 1)[1] for name in names]

    up = ports(lambda port: f"p{port:05d}")
    down = ports(lambda port: f"p{99999 - port:05d}")
    assert up == sorted(up, key=int) and down == up[::-1]
