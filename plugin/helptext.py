"""``--help``: rendered by typer from the flag table, kept in a cache file after the first time.

Importing typer and letting it build the commands takes ~0.2 s (it imports pydantic),
three times ``kubectl version --client``.  The text only changes with the plugin's
version, the flag table and the terminal width (click wraps at min(columns, 80) - 2),
so it is rendered once per such key and then read back from
``help-VERSION-wWIDTH-CRC.json`` in the plugin's cache folder (cache.py).  A unit test proves
the cached text is typer's.  Any trouble with the cache only costs the slow path.
"""

from __future__ import annotations

import os
import sys
import zlib
from typing import Any, Optional

from . import cache, flags

PROG = "kubectl sockdebug"


def width() -> int:
    """The width click wraps help at, for this terminal."""
    import shutil

    return max(min(shutil.get_terminal_size().columns, 80) - 2, 50)


def _cache_name(wrap: int) -> str:
    from sockdebug_agent import __version__

    crc = zlib.crc32(repr(sorted(flags.COMMANDS.items())).encode())
    return f"help-{__version__}-w{wrap}-{crc:08x}.json"


def text(command: str, wrap: Optional[int] = None) -> str:
    """The help of ``command``: from the cache, else rendered by typer (and cached)."""
    wrap = width() if wrap is None else wrap
    name = _cache_name(wrap)
    texts = cache.read(name)
    if isinstance(texts, dict) and isinstance(texts.get(command), str):
        return texts[command]
    texts = {cmd: render(cmd, wrap) for cmd in flags.COMMANDS}
    cache.write(name, texts)
    return texts[command]


def render(command: str, wrap: int) -> str:
    """typer's help text for ``command`` at this wrap width."""
    import io

    app = typer_app()
    out = io.StringIO()
    saved, sys.stdout = sys.stdout, out
    saved_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(wrap + 2)  # click reads the terminal width from here first
    try:
        app(args=[command, "--help"], prog_name=PROG, standalone_mode=False)
    finally:
        sys.stdout = saved
        if saved_columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved_columns
    return out.getvalue()


def typer_app() -> Any:
    """A typer application whose commands are the flag table's (used for help only)."""
    import inspect
    from typing import Optional as Opt

    import typer

    app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": list(flags.HELP_NAMES)})
    for cmd in flags.COMMANDS.values():
        params = []
        for arg in cmd.args:
            annotation = Opt[list[str]] if arg.many else (str if arg.required else Opt[str])
            default = typer.Argument(... if arg.required else None, help=arg.help, show_default=not arg.many)
            params.append(inspect.Parameter(arg.dest, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))
        for flag in cmd.flags:
            names = tuple(f"{on}/{off}" for on, off in zip(flag.names, flag.off)) if flag.off else flag.names
            annotation = flag.type if flag.type is bool or flag.default is not None else Opt[flag.type]
            default = typer.Option(flag.default, *names, help=flag.help, metavar=flag.metavar,
                                   show_default=flag.show_default)
            params.append(inspect.Parameter(flag.dest, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=annotation))

        def callback(**_values: Any) -> None:
            pass

        callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        callback.__annotations__ = {p.name: p.annotation for p in params}
        callback.__doc__ = cmd.doc
        app.command(cmd.name, epilog=cmd.epilog)(callback)
    return app
