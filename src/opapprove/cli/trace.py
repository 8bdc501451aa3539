"""``--trace`` / ``--trace-file``: every HTTP exchange the client makes, secrets masked.

Masking is two-layered: the client's ``Exchange.redacted()`` first, then text redaction over
everything shown, so a token in an unexpected place still comes out as ``***`` (both from
``openpayments.redaction``).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from opapprove.openpayments import jsontext
from opapprove.openpayments.redaction import redact_body, redact_headers, redact_text

if TYPE_CHECKING:
    from opapprove.openpayments.client import Exchange


def _text(body: bytes | str | None) -> str:
    if body is None:
        return ""
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


def exchange_record(exchange: Exchange, *, show_secrets: bool = False) -> dict[str, Any]:
    """One exchange as a JSON-ready dict (the ``--trace-file`` line, and what is printed)."""
    ex = exchange if show_secrets else exchange.redacted()
    record: dict[str, Any] = {
        "at": round(time.time(), 3),
        "operation": ex.operation or None,
        "attempt": ex.attempt,
        "method": ex.method,
        "url": ex.url,
        "status": ex.status,
        "elapsed_ms": round(ex.elapsed * 1000, 1),
        "request_headers": dict(ex.request_headers),
        "request_body": _text(ex.request_body),
        "signature_base": ex.signature_base,
        "response_headers": dict(ex.response_headers),
        "response_body": _text(ex.response_body),
        "error": ex.error,
    }
    if show_secrets:
        return record
    return _mask_record(record)


def _mask_record(record: dict[str, Any]) -> dict[str, Any]:
    for key in ("request_headers", "response_headers"):
        record[key] = redact_headers(record[key])
    for key in ("request_body", "response_body"):
        record[key] = redact_body(record[key])
    for key in ("url", "signature_base", "error"):
        if isinstance(record[key], str):
            record[key] = redact_text(record[key])
    return record


def _pretty_body(text: str) -> str:
    if not text:
        return ""
    try:
        return json.dumps(jsontext.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def format_exchange(record: dict[str, Any]) -> str:
    """The human form of one exchange, for stderr."""
    status = record["status"]
    outcome = f"{status}" if status is not None else f"no answer ({record['error']})"
    what = f"  ({record['operation']})" if record.get("operation") else ""
    retry = f"  [attempt {record['attempt']}]" if (record.get("attempt") or 1) > 1 else ""
    lines = [f"--> {record['method']} {record['url']}{what}{retry}"]
    lines += [f"    {k}: {v}" for k, v in record["request_headers"].items()]
    if record["request_body"]:
        lines += ["    " + ln for ln in _pretty_body(record["request_body"]).splitlines()]
    if record["signature_base"]:
        lines.append("    signature base:")
        lines += ["      " + ln for ln in record["signature_base"].splitlines()]
    lines.append(f"<-- {outcome} in {record['elapsed_ms']} ms")
    lines += [f"    {k}: {v}" for k, v in record["response_headers"].items()]
    if record["response_body"]:
        lines += ["    " + ln for ln in _pretty_body(record["response_body"]).splitlines()]
    if record["error"] and status is not None:
        lines.append(f"    error: {record['error']}")
    return "\n".join(lines)


class TraceSink:
    """The client's ``on_exchange`` callback: prints to stderr and/or appends JSON lines."""

    def __init__(
        self, *, to_stderr: bool, path: Path | None = None, show_secrets: bool = False
    ) -> None:
        self.to_stderr = to_stderr
        self.show_secrets = show_secrets
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if path is not None:
            self._file = _open_private_append(path)

    def __call__(self, exchange: Exchange) -> None:
        record = exchange_record(exchange, show_secrets=self.show_secrets)
        with self._lock:
            if self.to_stderr:
                sys.stderr.write(format_exchange(record) + "\n")
                sys.stderr.flush()
            if self._file is not None:
                self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _open_private_append(path: Path) -> IO[str]:
    """Append to ``path``, creating it 0600: traces hold signature bases and URLs."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")
