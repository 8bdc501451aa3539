"""The console script's entry point: what a process that is only the CLI may change in itself.

- Start-up runs without the cyclic garbage collector. A command imports hundreds of modules
  before its first request, and everything they allocate lives until exit, yet with the
  default thresholds the collector walks that growing heap again and again on the way
  (measured in bench/RESULTS.md, "What was changed"). The command switches it back on
  (`settled`) once it starts its real work, freezing what start-up built so that later
  full collections in long runs (bulk replay, the listener, the sandbox) skip it.
- The command ends with everything frozen. The interpreter's exit collects whatever is
  not: start-up's whole heap for a command that never resumed the collector (one that only
  reads the store and prints: ~85 ms of a ~450 ms ``status``), what the work built for
  one that did (~2% of a ``wallet check``), all of it freed by the process's end anyway
  (bench/RESULTS.md). The store and the trace file are closed before (``Runtime.close``).
- httpx's ``__init__`` imports its own command-line client (rich, click, pygments) whenever
  they are installed, and they are: this CLI depends on them. A command that does not
  print through rich would pay for them anyway, so httpx gets an empty ``_main`` and falls
  back to its stub ``main()``. The library leaves ``sys.modules`` alone.

Only the console script and ``python -m opapprove`` do this; the in-process ``main()``
used by tests and embedders leaves the host process as it was.
"""

from __future__ import annotations

import gc
import sys
import types

_paused = False


def run() -> None:
    """``opapprove`` as installed: the same CLI as ``opapprove.cli.main.run``."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", types.ModuleType("httpx._main"))
    from opapprove.cli.main import run as cli_run

    try:
        cli_run()
    finally:
        gc.freeze()


def settled() -> None:
    """Start-up is over: collect again (idempotent; a no-op unless `run` paused it)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
