"""Finishing approved grants in the background, so the buyer's page answers at once.

The finish route commits ``approved`` and answers; a task here waits out the wallet's
``continue.wait``, continues the grant and pays. One task per grant in a listener; across
listeners (or a `pending replay`) the grant's lease lets exactly one attempt continue,
and the others step back (``busy``) and show the same page until the grant is done.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow

# Failures remembered for the buyer's page; beyond this the oldest are forgotten.
MAX_REMEMBERED = 1000


class Finisher:
    def __init__(self, flow: Flow, emit: Callable[[dict[str, Any]], None]) -> None:
        self.flow = flow
        self.emit = emit
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.failures: OrderedDict[str, FlowError] = OrderedDict()
        self._reported: OrderedDict[str, str] = OrderedDict()

    def failure(self, pending_id: str) -> FlowError | None:
        return self.failures.get(pending_id)

    def start(self, pending_id: str) -> None:
        """Drive the grant on unless a task here already does, or it failed here."""
        running = self.tasks.get(pending_id)
        if (running is not None and not running.done()) or pending_id in self.failures:
            return
        self.tasks[pending_id] = asyncio.create_task(self._drive(pending_id))

    async def _drive(self, pending_id: str) -> None:
        try:
            done = await self.flow.complete(pending_id)
        except FlowError as err:
            if err.kind == "busy":
                return  # another attempt (another listener, a replay) holds the lease
            self._remember(pending_id, err)
            named = {"rejected": "rejected", "expired": "expired"}
            self.emit(
                {
                    "event": named.get(err.kind, "failed"),
                    "pendingId": pending_id,
                    "kind": err.kind,
                    "error": err.message,
                    "hint": err.hint,
                    "background": True,
                }
            )
        except Exception as exc:  # a handler must never die with a traceback
            unexpected = FlowError(
                f"unexpected error while finishing: {type(exc).__name__}: {exc}",
                hint=f"resume with `opapprove pending replay {pending_id}` (it never pays twice)",
                kind="protocol",
                pending_id=pending_id,
            )
            self._remember(pending_id, unexpected)
            self.emit(
                {
                    "event": "failed",
                    "pendingId": pending_id,
                    "kind": unexpected.kind,
                    "error": unexpected.message,
                    "background": True,
                }
            )
        else:
            if self._reported.get(pending_id) != str(done.state):
                self._reported[pending_id] = str(done.state)
                _trim(self._reported)
                self.emit(
                    {
                        "event": "finished",
                        "pendingId": done.id,
                        "state": str(done.state),
                        "offerId": done.offer_id,
                        "outgoingPayment": done.outgoing_payment_url,
                    }
                )
        finally:
            self.tasks.pop(pending_id, None)

    def _remember(self, pending_id: str, err: FlowError) -> None:
        self.failures[pending_id] = err
        _trim(self.failures)

    async def aclose(self, grace: float) -> None:
        """Let running payments finish for up to ``grace`` seconds, then stop them.

        A stopped one is left where its last committed step put it: `pending replay`
        carries it on without paying twice.
        """
        running = [t for t in self.tasks.values() if not t.done()]
        if not running:
            return
        _, pending = await asyncio.wait(running, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


def _trim(mapping: OrderedDict[str, Any]) -> None:
    while len(mapping) > MAX_REMEMBERED:
        mapping.popitem(last=False)
