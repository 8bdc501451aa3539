"""Fault rules an operator sets per route: answer with a status, delay, or drop the connection.

A rule is keyed by an operation name (``create-outgoing-payment``), by ``METHOD /path-glob``
(``POST /op/outgoing-payments``) or by a bare path glob (``/op/quotes*``), and applies to the
next ``times`` matching requests (every one when ``times`` is absent).
"""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass
from typing import Any, TypedDict

from opapprove.servers.sandbox.errors import SandboxError

DROP_MODES = ("before_commit", "after_commit")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class FaultSpec(TypedDict, total=False):
    """A rule's fields as the Python helpers take them: one of the first three; ``None`` is as
    if the field were not given."""

    status: int | None
    delay: float | None
    drop: str | None
    times: int | None


@dataclass
class FaultRule:
    route: str
    status: int | None = None
    delay: float | None = None
    drop: str | None = None
    times: int | None = None

    def matches(self, method: str, path: str, operation: str | None) -> bool:
        route = self.route.strip()
        if operation is not None and route == operation:
            return True
        head, _, rest = route.partition(" ")
        if head.upper() in HTTP_METHODS and rest:
            return head.upper() == method and fnmatch.fnmatchcase(path, rest.strip())
        return route.startswith("/") and fnmatch.fnmatchcase(path, route)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("status", "delay", "drop", "times"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def parse_rule(route: str, spec: Any) -> FaultRule:
    if not isinstance(route, str) or not route.strip():
        raise SandboxError("a fault needs a route: an operation name or a path pattern")
    if not isinstance(spec, dict):
        raise SandboxError(f'fault for {route!r} must be an object like {{"status": 500}}')
    extra = set(spec) - {"status", "delay", "drop", "times"}
    if extra:
        raise SandboxError(f"fault for {route!r} has unknown fields: {', '.join(sorted(extra))}")
    kinds = [k for k in ("status", "delay", "drop") if spec.get(k) is not None]
    if len(kinds) != 1:
        raise SandboxError(f"fault for {route!r} needs exactly one of status, delay or drop")
    status, delay, drop, times = (spec.get(k) for k in ("status", "delay", "drop", "times"))
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise SandboxError(f"fault status {status!r} is not an HTTP status code")
    if delay is not None and (
        isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0
    ):
        raise SandboxError(f"fault delay {delay!r} must be a number of seconds >= 0")
    if drop is not None and drop not in DROP_MODES:
        raise SandboxError(f"fault drop {drop!r} must be one of {', '.join(DROP_MODES)}")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise SandboxError(f"fault times {times!r} must be a positive integer")
    return FaultRule(
        route=route.strip(),
        status=status,
        delay=None if delay is None else float(delay),
        drop=drop,
        times=times,
    )


class FaultBook:
    """The active rules; ``take`` consumes one use of the first rule that matches."""

    def __init__(self) -> None:
        self._rules: dict[str, FaultRule] = {}
        self._lock = threading.Lock()

    def set(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules[rule.route] = rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str, operation: str | None) -> FaultRule | None:
        with self._lock:
            for key, rule in self._rules.items():
                if rule.matches(method, path, operation):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            del self._rules[key]
                    return rule
        return None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {key: rule.to_dict() for key, rule in self._rules.items()}
