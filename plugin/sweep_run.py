"""``kubectl sockdebug sweep``: list the specs, collect every running pod's listening
sockets (``collect.py``: ``--via ephemeral`` or ``--via node``), then hand them to the pure
analysis in ``sweep.py`` and render its findings."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import collect, podspec
from . import sweep as analysis
from .collect import PARALLEL, Progress
from .errors import AccessError, FindingsError, SockdebugError
from .options import SweepOptions

LOG_LINES = 30


# --- logs of crash-looping containers ------------------------------------------------------------

def crash_logs(kube, pods: list[dict], parallel: int = PARALLEL) -> dict[tuple[str, str, str], str]:
    """The last lines of every failing container's failed run, where the bind error is: the
    current container when it has just terminated (the kubelet may already have removed the
    one before), else the previous one (CrashLoopBackOff, or restarted and running again)."""
    wanted = [(podspec.key(p), c["name"]) for p in pods if podspec.is_running(p)
              for c in podspec.containers(p) if podspec.trouble(p, c["name"])]

    def one(item: tuple[analysis.PodKey, str]) -> tuple[tuple[str, str, str], str]:
        (ns, name), container = item
        texts = []
        for previous in (True, False):
            try:
                texts.append(kube.log_tail(ns, name, container, lines=LOG_LINES, previous=previous))
            except SockdebugError:
                continue
        return (ns, name, container), "\n".join(texts)

    if not wanted:
        return {}
    with ThreadPoolExecutor(max_workers=min(parallel, len(wanted))) as pool:
        return dict(pool.map(one, wanted))


# --- the command ------------------------------------------------------------------------------------

def _list_or(fn: Callable[[], list[dict]], fallback: Callable[[], list[dict]]) -> list[dict]:
    """fn(), or fallback() when we may not (a namespaced user asking cluster-wide)."""
    try:
        return fn()
    except AccessError:
        return fallback()


def run(opts: SweepOptions, out=None, err=None) -> int:
    from .kube import connect
    from .render import escape, use_color

    out = out or sys.stdout
    err = err or sys.stderr
    started = time.monotonic()
    kube = connect(opts.conn.kubeconfig, opts.conn.context, opts.conn.namespace)
    if opts.verbose:
        kube.trace = lambda text: print(escape(text), file=err)
    scope_ns = None if opts.all_namespaces else kube.namespace
    pods = [p for p in kube.list_pods(scope_ns, opts.selector) if not p["metadata"].get("deletionTimestamp")]
    scoped_wide = opts.all_namespaces and not opts.selector
    context = [] if scoped_wide else _list_or(lambda: kube.list_pods(None), list)
    running = [p for p in pods if podspec.is_running(p)]
    progress = Progress(len(running), "pods" if opts.via == "ephemeral" else "nodes", err)
    if opts.verbose:
        kube.trace = progress.note  # without tearing the bar
    services_checked = True
    try:
        services = kube.list_services(scope_ns) if scoped_wide else _list_or(
            lambda: kube.list_services(None), lambda: kube.list_services(scope_ns))
    except AccessError as exc:
        services, services_checked = [], False
        progress.note(f"note: the Service checks were skipped: {exc.cause} (grant `list` on services)")
    got = collect.collect(kube, opts, pods, context, progress)
    progress.close()
    if got.first_error is not None and not got.sockets:
        raise got.first_error  # nothing could be read at all: a setup problem, not a clean cluster
    logs = crash_logs(kube, pods, opts.parallel)
    for w in got.warnings:
        print(f"warning: {escape(w)}", file=err)
    data = analysis.SweepInput(pods=pods, services=services, sockets=got.sockets, uninspected=got.uninspected,
                               context_pods=context, host_listeners=got.host_listeners(), logs=logs)
    report = analysis.analyse(data)
    scope = {"namespaces": None if opts.all_namespaces else [kube.namespace], "selector": opts.selector,
             "via": opts.via, "services_checked": services_checked,
             "elapsed_s": round(time.monotonic() - started, 2), "requests": kube.requests.as_dict()}
    if opts.verbose:
        print(f"api: {kube.requests.line()}", *kube.requests.table(), sep="\n", file=err)
    if opts.output == "table":
        out.write(analysis.text(report, scope, use_color(out)) + "\n")
    else:
        doc = analysis.document(report, scope)
        if opts.output == "json":
            import json

            json.dump(doc, out, indent=2)
            out.write("\n")
        else:
            import yaml

            yaml.dump(doc, out, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False)
    out.flush()
    if opts.fail_on:
        worst = analysis.at_or_above(report.findings, opts.fail_on)
        if worst:
            raise FindingsError(f"{len(worst)} finding(s) at or above {opts.fail_on}", "see the findings above")
    return 0

