"""The console script's entry point: start-up runs without the cyclic garbage collector.

A command imports ~550 modules (typer, pydantic, httpx, ...) before it sends its first
request. Everything those imports allocate lives until the process exits, yet with the
default thresholds the collector walks that growing heap ~150 times on the way: 40-80 ms
of a 400-600 ms `quote start` on this project's 2-CPU machine (bench/RESULTS.md, "What
was changed").
So the entry point switches the collector off, and the command switches it back on
(`settled`) once it starts its real work, freezing what start-up built so that later full
collections in long runs (bulk replay, the listener, the sandbox) skip it.

Only the console script and ``python -m opapprove`` do this; the in-process ``main()``
used by tests and embedders leaves the host's collector alone.
"""

from __future__ import annotations

import gc

_paused = False


def run() -> None:
    """``opapprove`` as installed: the same CLI as ``opapprove.cli.main.run``."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True
    from opapprove.cli.main import run as cli_run

    cli_run()


def settled() -> None:
    """Start-up is over: collect again (idempotent; a no-op unless `run` paused it)."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
