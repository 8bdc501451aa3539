"""One line of a diagnostic report: what ``doctor`` checked, what step ``smoke`` ran."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

S = TypeVar("S", bound=str)


@dataclass(frozen=True)
class Finding(Generic[S]):
    """What was looked at, how it went, what to do about it (``hint``), and ``kind``: what a
    warning or failure is about (an error kind, so it picks the exit code)."""

    name: str
    status: S
    message: str
    hint: str | None = None
    kind: str | None = None

    def json_head(self, label: str) -> dict[str, Any]:
        """The fields every report line has in ``--json``, the name under ``label``."""
        return {label: self.name, "status": self.status, "message": self.message, "hint": self.hint}
