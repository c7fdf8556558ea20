"""The entry of ``sockdebug-agent`` and ``python -m sockdebug_agent``: ``cli.run``, with
the cyclic garbage collector off before the agent's modules are imported.

The agent is a short-lived process that makes no reference cycles worth collecting
(``cli.main`` says why it keeps the collector off).  Switched off only in ``main``, it
still ran during the imports, whose classes and functions are what it scans: about 3%
of a run that prints nothing (bench/results/startup.md).
"""

import gc

gc.disable()

from .cli import run  # noqa: E402 - after gc.disable(), which is the point of this module

__all__ = ["run"]
