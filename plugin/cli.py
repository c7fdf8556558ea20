"""``kubectl sockdebug``: kubectl conventions first, ss habits second.

    kubectl sockdebug TARGET [options] [state S ...] [FILTER ...]
    kubectl sockdebug sweep [-n NS | -A] ...        (cluster-wide port checks)
    kubectl sockdebug triage TARGET                   (findings first)
    kubectl sockdebug agents [-n NS | -A]             (the agents it started)
    kubectl sockdebug stop TARGET | -l SEL | --all    (end them)

argv -> ``flags.parse`` -> ``options.build`` (complete) -> ``.validate()`` -> the
command (``commands``, ``triage``, ``sweep_run``) on the runner.  Nothing heavy is imported
before validation passes, so ``--help``, completion and every usage error stay
fast.  Every failure is one line of cause, one of fix, and an exit code
(errors.py); never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Optional

from . import flags, options
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_OUTPUT, SockdebugError


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        request = flags.parse(args)
        if isinstance(request, flags.Help):
            from . import helptext

            sys.stdout.write(helptext.text(request.command))
            return EXIT_OK
        opts = options.build(request)
        opts.validate()
        return run_command(opts)
    except SockdebugError as exc:
        return _fail(exc.cause, exc.hint, exc.exit_code)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `| head` went away: quietly, as kubectl and ss under SIGPIPE
        _silence_stdout()
        return EXIT_OUTPUT
    except Exception as exc:  # anything unforeseen: one line, no traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}",
                     "please report this at https://github.com/sockdebug/sockdebug/issues with the command line", 6)


def run_command(opts: options.Options) -> int:
    """Run a validated command."""
    if isinstance(opts, options.VersionOptions):
        from sockdebug_agent import __version__

        print(f"kubectl-sockdebug {__version__}")
        return EXIT_OK
    if isinstance(opts, options.SweepOptions):
        from . import sweep_run

        return sweep_run.run(opts)
    if isinstance(opts, options.AgentsOptions):
        from . import agents

        return agents.run(opts)
    if isinstance(opts, options.StopOptions):
        from . import stop

        return stop.run(opts)
    if isinstance(opts, options.InspectOptions) and opts.events:
        from . import events_run

        return events_run.run(opts)
    from . import warm

    early = warm.prestart(opts)  # the execs of a warm query start before the rest is imported
    if isinstance(opts, options.TriageOptions):
        from . import triage

        return triage.run(opts, early)
    from . import commands

    return commands.inspect(opts, early)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's last flush of stdout cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _fail(cause: str, hint: Optional[str], code: int) -> int:
    from .render import escape

    print(f"error: {escape(cause)}", file=sys.stderr)
    if hint:
        print(f"hint: {escape(hint)}", file=sys.stderr)
    return code


def run() -> None:
    code = main()
    import threading

    if code == EXIT_INTERRUPTED and threading.active_count() > 1:
        # Worker threads may sit in an API call for up to --timeout; the runner has
        # already deleted what it created, so leave without waiting for them.
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
