"""``kubectl sockdebug``: kubectl conventions first, ss habits second.

    kubectl sockdebug TARGET [options] [state S ...] [FILTER ...]
    kubectl sockdebug sweep [-n NS | -A] ...        (cluster-wide port checks)
    kubectl sockdebug triage TARGET                   (findings first)

Nothing heavy is imported until a command talks to a cluster, so ``--help`` and
completion stay fast.  Every failure is one line of cause, one of fix, and an exit
code (errors.py); never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

import typer

from .errors import EXIT_OK, SockdebugError, UsageError

SUBCOMMANDS = ("inspect", "sweep", "triage", "version")
EPILOG = ("Other commands: `kubectl sockdebug sweep --help` (cluster-wide port conflicts), "
          "`kubectl sockdebug triage --help` (findings first).  ss habits: see README 'From ss to sockdebug'.")

app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})


def _image_default() -> str:
    from sockdebug_agent import __version__

    return f"sockdebug-agent:{__version__}"


class Flags:
    """Option declarations shared by inspect, triage and sweep."""

    namespace = typer.Option(None, "-n", "--namespace", help="namespace (default: the context's)")
    context = typer.Option(None, "--context", help="kubeconfig context")
    kubeconfig = typer.Option(None, "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    container = typer.Option(None, "-c", "--container", help="target container (default: the pod's default)")
    image = typer.Option(None, "--image", help="agent image (default: sockdebug-agent:VERSION)")
    pull = typer.Option("IfNotPresent", "--image-pull-policy", help="Always|IfNotPresent|Never")
    profile = typer.Option("auto", "--profile",
                           help="auto|general|baseline|restricted|netadmin: the agent's security context")
    timeout = typer.Option(60.0, "--timeout", help="seconds to wait for the agent to start and answer")
    fail_on = typer.Option(None, "--fail-on", help="exit 1 on findings of this severity or worse "
                           "(info|warning|critical)")


def _conn(namespace: Optional[str], context: Optional[str], kubeconfig: Optional[str]) -> dict:
    return dict(namespace=namespace, context=context, kubeconfig=kubeconfig)


def _agent(image: Optional[str], pull_policy: str, profile: str, timeout: float) -> dict:
    return dict(image=image or _image_default(), pull_policy=pull_policy, profile=profile, timeout=timeout)


@app.command("inspect", epilog=EPILOG)
def inspect(
    target: Optional[str] = typer.Argument(None, help="pod/NAME, NAME, deploy/, sts/, ds/, rs/, job/, svc/, node/"),
    words: Optional[list[str]] = typer.Argument(None, help="ss state words and filter: state established "
                                                "'(' dport = :443 ')'", show_default=False),
    namespace: Optional[str] = Flags.namespace,
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces", help="with -l: pods of every namespace"),
    selector: Optional[str] = typer.Option(None, "-l", "--selector", help="pods with these labels"),
    all_pods: bool = typer.Option(False, "--all-pods", help="every pod of a workload, not one"),
    context: Optional[str] = Flags.context,
    kubeconfig: Optional[str] = Flags.kubeconfig,
    container: Optional[str] = Flags.container,
    output: str = typer.Option("table", "-o", "--output", help="table|wide|json|yaml|jsonl"),
    listening: bool = typer.Option(False, "--listening", help="listening sockets (ss -l)"),
    all_states: bool = typer.Option(False, "-a", "--all", help="listening and connected sockets (ss -a)"),
    tcp: bool = typer.Option(False, "-t", "--tcp", help="TCP (ss -t)"),
    udp: bool = typer.Option(False, "-u", "--udp", help="UDP (ss -u)"),
    unix: bool = typer.Option(False, "-x", "--unix", help="unix sockets (ss -x)"),
    raw: bool = typer.Option(False, "-w", "--raw", help="raw sockets (ss -w)"),
    ipv4: bool = typer.Option(False, "-4", "--ipv4", help="IPv4 only"),
    ipv6: bool = typer.Option(False, "-6", "--ipv6", help="IPv6 only"),
    processes: bool = typer.Option(True, "-p/-P", "--processes/--no-processes",
                                   help="owning process and container (ss -p); on by default",
                                   show_default=False),
    timers: bool = typer.Option(False, "--timers", help="timers (ss -o)"),
    extended: bool = typer.Option(False, "-e", "--extended", help="details (ss -e)"),
    memory: bool = typer.Option(False, "-m", "--memory", help="socket memory (ss -m)"),
    info: bool = typer.Option(False, "-i", "--info", help="TCP internals (ss -i)"),
    summary: bool = typer.Option(False, "-s", "--summary", help="totals and TCP state counts (ss -s)"),
    routes: bool = typer.Option(False, "--routes", help="every route of every table (routel)"),
    interfaces: bool = typer.Option(False, "--interfaces", help="links and addresses (ip addr)"),
    limits: bool = typer.Option(False, "--limits", help="fd use vs limits, kernel pressure figures"),
    watch: Optional[float] = typer.Option(None, "--watch", metavar="[=SECONDS]",
                                          help="refresh every SECONDS (default 2), marking new (+) and "
                                          "closed (-) sockets"),
    profile: str = Flags.profile,
    image: Optional[str] = Flags.image,
    image_pull_policy: str = Flags.pull,
    timeout: float = Flags.timeout,
) -> None:
    """What a pod really listens on and talks to: ss inside any pod, from an ephemeral agent container."""
    from . import commands

    socket_flags = dict(listening=listening, all_states=all_states, tcp=tcp, udp=udp, unix=unix, raw=raw,
                        ipv4=ipv4, ipv6=ipv6, processes=processes, timers=timers, extended=extended,
                        memory=memory, info=info)
    views = dict(summary=summary, routes=routes, interfaces=interfaces, limits=limits)
    conn = _conn(namespace, context, kubeconfig)
    agent = _agent(image, image_pull_policy, profile, timeout)
    raise typer.Exit(commands.inspect(
        target, list(words or []), conn=conn, agent=agent, container=container, selector=selector,
        all_namespaces=all_namespaces, all_pods=all_pods, output=output, socket_flags=socket_flags, views=views,
        watch=watch))


@app.command("sweep")
def sweep(
    namespace: Optional[str] = Flags.namespace,
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces", help="every namespace"),
    selector: Optional[str] = typer.Option(None, "-l", "--selector", help="only pods with these labels"),
    via: str = typer.Option("ephemeral", "--via", help="ephemeral: an agent container in each pod (reused when "
                            "running); node: one short-lived privileged pod per node (or the node-agent DaemonSet), "
                            "nothing added to the pods"),
    context: Optional[str] = Flags.context,
    kubeconfig: Optional[str] = Flags.kubeconfig,
    output: str = typer.Option("table", "-o", "--output", help="table|json|yaml"),
    fail_on: Optional[str] = Flags.fail_on,
    parallel: int = typer.Option(8, "--parallel", help="pods (or nodes) inspected at once"),
    profile: str = Flags.profile,
    image: Optional[str] = Flags.image,
    image_pull_policy: str = Flags.pull,
    timeout: float = Flags.timeout,
) -> None:
    """Every port problem in scope: what pods and Services declare against what really listens."""
    from . import sweep_run

    conn = _conn(namespace, context, kubeconfig)
    agent = _agent(image, image_pull_policy, profile, timeout)
    raise typer.Exit(sweep_run.run(conn=conn, agent=agent, all_namespaces=all_namespaces, selector=selector, via=via,
                                   output=output, fail_on=fail_on, parallel=parallel))


@app.command("triage")
def triage(
    target: str = typer.Argument(..., help="pod/NAME, NAME, a workload, or node/NAME"),
    namespace: Optional[str] = Flags.namespace,
    context: Optional[str] = Flags.context,
    kubeconfig: Optional[str] = Flags.kubeconfig,
    container: Optional[str] = Flags.container,
    output: str = typer.Option("table", "-o", "--output", help="table|json|yaml|jsonl"),
    fail_on: Optional[str] = Flags.fail_on,
    profile: str = Flags.profile,
    image: Optional[str] = Flags.image,
    image_pull_policy: str = Flags.pull,
    timeout: float = Flags.timeout,
) -> None:
    """On-call triage of one pod or node: findings first (most severe first), then the numbers behind them."""
    from . import commands

    conn = _conn(namespace, context, kubeconfig)
    agent = _agent(image, image_pull_policy, profile, timeout)
    raise typer.Exit(commands.triage(target, conn=conn, agent=agent, container=container, output=output,
                                     fail_on=fail_on))


@app.command("version")
def version() -> None:
    """Print the plugin's version."""
    from sockdebug_agent import __version__

    print(f"kubectl-sockdebug {__version__}")


def _normalise(argv: list[str]) -> list[str]:
    """``kubectl sockdebug pod/x`` means ``inspect pod/x``; a bare ``--watch`` means 2 s."""
    out = []
    for i, arg in enumerate(argv):
        bare_watch = arg == "--watch" and (i + 1 >= len(argv) or not _is_number(argv[i + 1]))
        out.append("--watch=2" if bare_watch else arg)
    if not out or out[0] not in SUBCOMMANDS:
        out.insert(0, "inspect")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _normalise(list(sys.argv[1:] if argv is None else argv))
    if args == ["inspect"]:
        args = ["inspect", "--help"]
    try:
        # Without standalone mode click returns (not raises) a command's typer.Exit code.
        rc = app(args=args, prog_name="kubectl sockdebug", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or EXIT_OK)
    except SockdebugError as exc:
        return _fail(exc.cause, exc.hint, exc.exit_code)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors and anything unforeseen: one line, no traceback
        return _unexpected(exc)
    return rc if isinstance(rc, int) else EXIT_OK


def _fail(cause: str, hint: Optional[str], code: int) -> int:
    from .render import escape

    print(f"error: {escape(cause)}", file=sys.stderr)
    if hint:
        print(f"hint: {escape(hint)}", file=sys.stderr)
    return code


def _unexpected(exc: Exception) -> int:
    # click's exceptions, or the copy recent typer (0.29) vendors as typer._click (click itself may
    # then not be installed at all): matched by class name, not by importing click.
    kinds = {cls.__name__ for cls in type(exc).__mro__}
    if "UsageError" in kinds:
        hint = "see `kubectl sockdebug --help`"
        return _fail(exc.format_message(), hint, UsageError("").exit_code)
    if "Abort" in kinds:
        return 130
    if "ClickException" in kinds:
        return _fail(exc.format_message(), None, 2)
    return _fail(f"unexpected {type(exc).__name__}: {exc}",
                 "please report this at https://github.com/sockdebug/sockdebug/issues with the command line", 6)


def run() -> None:
    sys.exit(main())
