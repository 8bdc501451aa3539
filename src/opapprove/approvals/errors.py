"""The one error the approval flow raises: what happened, what to do, and its kind."""

from __future__ import annotations

from opapprove.errors import OpapproveError


class FlowError(OpapproveError):
    """``kind`` is one of ``opapprove.errors.EXIT_CODES`` (``protocol`` unless said)."""

    kind = "protocol"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        kind: str = "protocol",
        status: int | None = None,
        code: str | None = None,
        pending_id: str | None = None,
    ) -> None:
        super().__init__(message, hint, kind=kind)
        self.status = status
        self.code = code
        self.pending_id = pending_id
