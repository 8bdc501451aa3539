"""The approval Flow a command drives: the runtime's store, settings and trace, plus webhooks.

Every command that moves a grant (quote, finish, status, pending, listen) builds its Flow
here, so each one notifies the marketplace the same way when ``webhook_url`` is set.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from opapprove.approvals.flow import Flow
    from opapprove.approvals.records import Pending
    from opapprove.approvals.webhooks import WebhookSender

FlowHook = Callable[[str, "Pending", dict[str, Any]], Awaitable[None] | None]


@dataclass
class Session:
    flow: Flow
    webhooks: WebhookSender | None


@asynccontextmanager
async def open_flow(
    runtime: Runtime, *, on_event: FlowHook | None = None, background_webhooks: bool = False
) -> AsyncIterator[Session]:
    """A Flow (closed on exit) whose events go to ``on_event`` and, if configured, webhooks.

    ``background_webhooks`` (the listener): deliveries run beside the flow instead of
    before the next step, so a slow or absent receiver never holds up the buyer's page;
    leaving the block waits for them.
    """
    import asyncio

    from opapprove.approvals.flow import Flow

    settings = runtime.settings()
    store = runtime.store()
    sender: WebhookSender | None = None
    if settings.webhook_url:
        from opapprove.approvals.webhooks import WebhookSender

        sender = WebhookSender(settings, store)
    hooks: list[FlowHook] = [h for h in (on_event, sender.handle if sender else None) if h]
    in_flight: set[asyncio.Task[None]] = set()

    async def fan_out(kind: str, pending: Pending, data: dict[str, Any]) -> None:
        for hook in hooks:
            if background_webhooks and sender is not None and hook == sender.handle:
                task = asyncio.create_task(sender.handle(kind, pending, data))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                continue
            result = hook(kind, pending, data)
            if inspect.isawaitable(result):
                await result

    flow = Flow(
        store,
        settings,
        on_exchange=runtime.on_exchange(),
        on_event=fan_out if hooks else None,
    )
    try:
        yield Session(flow, sender)
    finally:
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        await flow.aclose()
        if sender is not None:
            await sender.aclose()
