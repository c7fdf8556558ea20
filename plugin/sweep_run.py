"""``kubectl sockdebug sweep``: list the pods in scope, read every running pod's listening
sockets (``gather.py``: ``--via ephemeral`` or ``--via node``) while the API lists what the
engine needs (``collect.read``), then judge them with the findings engine
(``engine.analyse``: the rules, ids, order, renderer and ``--fail-on`` of ``triage``) and
render its report."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

from . import collect, engine, findings, gather, output, podspec
from .gather import Progress
from .options import SweepOptions
from .view import ClusterInput, NodeObservation, PodObservation


def run(opts: SweepOptions, out=None, err=None) -> int:
    """List the pods in scope; read what the engine needs from the API (``collect.read``:
    one list per kind, per namespace or for the cluster) while the agents read the running
    pods' listeners; then the findings engine, the one renderer and ``--fail-on``.  Every
    API request is counted (``kube.requests``): the summary's ``requests``, and with ``-v``
    each retry as it happens and a table by kind at the end."""
    from .kube import connect
    from .render import escape

    out = out or sys.stdout
    err = err or sys.stderr
    started = time.monotonic()
    kube = connect(opts.conn.kubeconfig, opts.conn.context, opts.conn.namespace)
    if opts.verbose:
        kube.trace = lambda text: print(escape(text), file=err)
    scope_ns = None if opts.all_namespaces else kube.namespace
    pods = [p for p in kube.list_pods(scope_ns, opts.selector) if not p["metadata"].get("deletionTimestamp")]
    every_pod = opts.all_namespaces and not opts.selector  # the pods in scope are all there are
    running = [p for p in pods if podspec.is_running(p)]
    progress = Progress(len(running), "pods" if opts.via == "ephemeral" else "nodes", err)
    if opts.verbose:
        kube.trace = progress.note  # without tearing the bar
    with ThreadPoolExecutor(max_workers=2) as api:
        reads = api.submit(collect.read, kube, None if scope_ns is None else [scope_ns],
                           kinds=[k for k in collect.ALL if not (k == "pods" and every_pod)], parallel=opts.parallel)
        logs = api.submit(collect.failed_run_logs, kube, pods, opts.parallel)
        # --via node attributes a node's sockets to every pod on it, in scope or not
        context = [] if opts.via == "ephemeral" else pods if every_pod else reads.result().pods
        got = gather.sockets(kube, opts, pods, context, progress)
        progress.close()
        if got.first_error is not None and not got.sockets:
            raise got.first_error  # nothing could be read at all: a setup problem, not a clean cluster
        r = reads.result()
        data = ClusterInput(
            pods=pods, context_pods=r.pods, services=r.services, endpoint_slices=r.endpoint_slices,
            network_policies=r.network_policies, nodes=r.nodes, events=r.events, logs=logs.result(),
            observed={k: PodObservation(v) for k, v in got.sockets.items()}, uninspected=got.uninspected,
            node_observed={n: NodeObservation(v) for n, v in got.host_listeners().items()},
            not_listed=r.not_listed, not_seen=r.notes)
    for w in got.warnings:
        print(f"warning: {escape(w)}", file=err)
    report = engine.analyse(data)
    scope = {"namespaces": None if opts.all_namespaces else [kube.namespace], "selector": opts.selector,
             "via": opts.via, "services_checked": "services" not in r.not_listed,
             "elapsed_s": round(time.monotonic() - started, 2), "requests": kube.requests.as_dict()}
    if opts.verbose:
        print(f"api: {kube.requests.line()}", *kube.requests.table(), sep="\n", file=err)
    output.emit(opts.printing, output.findings_view(
        report, scope, lambda r, s: findings.document(r, s, "SweepReport"), findings.text), out)
    out.flush()
    findings.fail_on(report.findings, opts.fail_on)
    return 0
