"""Worker processes for the tests that run several processes on one store."""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

# What the workers run. Imported once by the fork server; "spawn" imported them again in
# every worker, and that start-up was most of those tests' time.
WORKER_MODULES = ["tests.approvals.test_store_concurrency", "tests.approvals.test_store_processes"]


def worker_context() -> BaseContext:
    """Each worker a process of its own, forked from a server process started clean (none
    of the test's threads or open stores) that imported WORKER_MODULES once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_MODULES)
    return ctx
