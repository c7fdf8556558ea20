"""``kubectl sockdebug`` from argv to output against the API double: the full path, the
warm path (remembered agents, execs through a stand-in ``kubectl``), its fallback when an
agent is gone, exit codes and Ctrl-C; and the ``--help`` cache."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from kube_double import CREATING, NEVER_PULL, RECORDED, ApiDouble, patched
from sockdebug_plugin import cli, flags, helptext, warm

IMAGE = "sockdebug-agent:core"


@pytest.fixture
def api(monkeypatch, tmp_path) -> ApiDouble:
    double = patched(monkeypatch, tmp_path)
    double.add_pod()
    return double


def fake_kubectl(tmp_path, script: str) -> None:
    """A ``kubectl`` on PATH that answers execs like the remembered agents would."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    streams = tmp_path / "streams.json"
    streams.write_text(json.dumps({"sidecar": RECORDED["exec_sockets_sidecar"]["stdout"],
                                   "app": RECORDED["exec_sockets"]["stdout"]}))
    path = bindir / "kubectl"
    path.write_text(f"#!{sys.executable}\nimport json, sys\nargs = sys.argv[1:]\n"
                    f"streams = json.load(open({str(streams)!r}))\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


ANSWER = """agent = args[args.index("-c") + 1]
with open(sys.argv[0] + ".log", "a") as log:
    log.write(" ".join(args) + "\\n")
sys.stdout.write(streams["sidecar" if agent in open(sys.argv[0] + ".sidecars").read() else "app"])"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([*argv, "--image", IMAGE])
    out = capsys.readouterr()
    return code, out.out, out.err


def table(out: str) -> list[str]:
    return sorted(out.splitlines()[1:])


def test_a_query_runs_and_its_pod_is_remembered(api, capsys):
    code, out, err = run(capsys, "pod/api", "-n", "shop", "--listening")
    assert code == 0, err
    rows = table(out)
    assert any("0.0.0.0:15000" in r and r.endswith("sidecar") for r in rows)
    assert any("127.0.0.1:8080" in r and r.endswith("app") for r in rows)
    remembered = json.loads((api_cache(api)).read_text())
    (entry,) = remembered.values()
    assert entry["namespace"] == "shop"
    agents = {c["targetContainerName"] for c in entry["pod"]["spec"]["ephemeralContainers"]}
    assert agents == {"app", "sidecar"}


def api_cache(api) -> os.PathLike:
    from pathlib import Path

    return Path(os.environ["XDG_CACHE_HOME"]) / "sockdebug" / warm.CACHE_NAME


def test_a_warm_query_needs_no_api_call_and_prints_the_same(api, capsys, tmp_path):
    code, cold, _ = run(capsys, "pod/api", "-n", "shop", "--listening")
    assert code == 0
    sidecar_agent = next(c["name"] for c in api.agents() if c["targetContainerName"] == "sidecar")
    fake_kubectl(tmp_path, ANSWER)
    (tmp_path / "bin" / "kubectl.sidecars").write_text(sidecar_agent)
    calls, connects = len(api.calls), api.connects
    code, warm_out, err = run(capsys, "pod/api", "-n", "shop", "--listening")
    assert code == 0, err
    assert table(warm_out) == table(cold)
    assert len(api.calls) == calls and api.connects == connects  # not one API request, no client
    execs = (tmp_path / "bin" / "kubectl.log").read_text().splitlines()
    assert len(execs) == 2 and all(e.startswith("-n shop exec api -c sockdebug-") for e in execs)


def test_a_warm_query_whose_agent_has_gone_falls_back_to_the_api(api, capsys, tmp_path):
    run(capsys, "pod/api", "-n", "shop", "--listening")
    fake_kubectl(tmp_path, 'sys.stderr.write("error: container not found\\n"); sys.exit(1)')
    connects = api.connects
    code, out, err = run(capsys, "pod/api", "-n", "shop", "--listening")
    assert code == 0, err
    assert api.connects == connects + 1 and any("15000" in r for r in table(out))
    assert err == ""  # the fallback is silent: the answer is the same


def test_warm_queries_are_keyed_by_the_kubeconfig_so_switching_context_forgets_them(api, capsys, tmp_path):
    run(capsys, "pod/api", "-n", "shop", "--listening")
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\ncurrent-context: other\n")
    fake_kubectl(tmp_path, 'raise SystemExit("kubectl must not run")')
    connects = api.connects
    assert run(capsys, "pod/api", "-n", "shop", "--listening")[0] == 0
    assert api.connects == connects + 1


@pytest.mark.parametrize(("start", "code", "words"), [
    (lambda c: [CREATING, NEVER_PULL], 5, "ErrImageNeverPull"),
])
def test_exit_codes_and_two_lines(api, capsys, start, code, words):
    api.start = start
    got, _, err = run(capsys, "pod/api", "-n", "shop")
    lines = err.splitlines()
    assert got == code and words in lines[-2] and lines[-2].startswith("error: ") and lines[-1].startswith("hint: ")


def test_a_missing_pod_names_the_pods_there(api, capsys):
    got, _, err = run(capsys, "pod/nope", "-n", "shop")
    assert got == 4 and "pods in namespace shop: api" in err


def test_ctrl_c_during_a_node_query_deletes_the_node_pod_and_exits_130(api, capsys):
    def interrupt(container):
        raise KeyboardInterrupt

    api.on_logs = interrupt
    got, _, _ = run(capsys, "node/node-1", "-n", "shop")
    assert got == 130
    assert not [n for (_, n) in api.pods if n.startswith("sockdebug-node-")]
    assert ("DELETE", next(p for m, p in api.calls if m == "DELETE")) in api.calls


def test_triage_of_a_node_uses_the_node_pod_shaped_by_the_profile(api, capsys):
    got, out, err = run(capsys, "triage", "node/node-1", "-n", "shop", "--profile", "restricted", "-o", "json")
    assert got == 0, err
    (body,) = api.created
    spec = body["spec"]
    assert spec["hostNetwork"] and spec["hostPID"] and spec["nodeName"] == "node-1"
    assert spec["containers"][0]["command"] == ["sockdebug-agent", "triage", "--sockets", "--host"]
    assert spec["containers"][0]["securityContext"]["runAsUser"] == 65534
    assert "process owners are not shown" in err and json.loads(out)["items"][0]["target"]["kind"] == "node"
    assert not [n for (_, n) in api.pods if n.startswith("sockdebug-node-")]


# --- --help ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", list(flags.COMMANDS))
def test_the_cached_help_is_typers(monkeypatch, tmp_path, command):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    typer_text = helptext.render(command, 78)
    assert helptext.text(command, 78) == typer_text  # renders and caches
    assert helptext.text(command, 78) == typer_text  # from the cache
    assert (tmp_path / "sockdebug").stat().st_mode & 0o777 == 0o700


def test_cached_help_does_not_import_typer(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "100"}
    code = ("import sys; from sockdebug_plugin import cli; cli.main(['sweep', '--help']); "
            "print('typer' in sys.modules, file=sys.stderr)")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert first.stderr.strip() == "True" and again.stderr.strip() == "False"
    assert first.stdout == again.stdout and "--via" in again.stdout
    (cached,) = (tmp_path / "sockdebug").iterdir()
    assert cached.stat().st_mode & 0o777 == 0o600


def test_without_kubectl_a_warm_query_execs_through_the_client_without_reading_the_pod(api, capsys):
    code, cold, _ = run(capsys, "pod/api", "-n", "shop", "--listening")
    assert code == 0
    api.calls.clear()
    code, again, err = run(capsys, "pod/api", "-n", "shop", "--listening")
    assert code == 0, err
    assert table(again) == table(cold)
    assert [m for m, _ in api.calls] == ["EXEC", "EXEC"]  # no GET, no PATCH
