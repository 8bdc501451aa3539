"""The pytest plugin (entry point ``pytest11``): fixtures ``op_sandbox`` and ``op_seller``.

``op_sandbox`` is one sandbox for the whole session, reset (no faults, no latency)
before and after each test; mark a test ``@pytest.mark.op_sandbox_fresh`` to give it a
sandbox of its own (fresh balances and payments), and pass ``SandboxConfig`` fields to the
marker for one set up differently (``@pytest.mark.op_sandbox_fresh(wait_seconds=5)``).
``op_seller`` is a new seller key per test, published at that sandbox. When a test that
used the sandbox fails, the report carries the sandbox's log lines from that test; when the
sandbox cannot start, the test errors with the sandbox's log attached.

Loaded by every pytest run where opapprove is installed, so this module imports nothing
heavy until a fixture is used. ``pytest -p no:opapprove`` turns it off.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opapprove.testing.sandbox import OpSandbox
    from opapprove.testing.seller import OpSeller

_USED: pytest.StashKey[list[tuple[OpSandbox, int]]] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("opapprove", "opapprove sandbox fixtures")
    group.addoption(
        "--op-sandbox-port",
        type=int,
        default=None,
        help="port for op_sandbox's session sandbox (default: a free one)",
    )
    parser.addini(
        "op_sandbox_port", "port for op_sandbox's session sandbox (0: a free one)", default="0"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "op_sandbox_fresh(**config): give this test a sandbox of its own, not the session's;"
        " keyword arguments are SandboxConfig fields",
    )


def _port(config: pytest.Config) -> int:
    given = config.getoption("--op-sandbox-port")
    return int(given if given is not None else config.getini("op_sandbox_port") or 0)


def _start(stack: ExitStack, port: int, **config: Any) -> OpSandbox:
    from opapprove.testing.sandbox import SandboxStartError, running_sandbox

    try:
        return stack.enter_context(running_sandbox(port=port, **config))
    except SandboxStartError as exc:
        pytest.fail(f"op_sandbox: {exc.message}\n--- sandbox log ---\n{exc.log}", pytrace=False)


@pytest.fixture(scope="session")
def _op_sandbox_session(pytestconfig: pytest.Config) -> Iterator[OpSandbox]:
    with ExitStack() as stack:
        yield _start(stack, _port(pytestconfig))


@pytest.fixture
def op_sandbox(request: pytest.FixtureRequest) -> Iterator[OpSandbox]:
    """A running sandbox: ``buyer_url``, ``seller_url``, ``approve(url)``, ``fault(...)``…"""
    with ExitStack() as stack:
        fresh = request.node.get_closest_marker("op_sandbox_fresh")
        if fresh is not None:
            sandbox = _start(stack, 0, **fresh.kwargs)
        else:
            sandbox = request.getfixturevalue("_op_sandbox_session")
            sandbox.reset()
            stack.callback(sandbox.reset)
        request.node.stash.setdefault(_USED, []).append((sandbox, sandbox.log.mark()))
        yield sandbox


@pytest.fixture
def op_seller(op_sandbox: OpSandbox, tmp_path_factory: pytest.TempPathFactory) -> OpSeller:
    """A seller with a fresh key published at ``op_sandbox``'s seller wallet."""
    from opapprove.testing.seller import make_seller

    directory: Path = tmp_path_factory.mktemp("op-seller")
    return make_seller(op_sandbox, directory)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for sandbox, mark in item.stash.get(_USED, []):
            text = sandbox.log.text(since=mark)
            if text:
                report.sections.append((f"op_sandbox log ({sandbox.url})", text))
    return report
