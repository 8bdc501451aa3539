from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox_fixtures import Sandbox, make_sandbox


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """An in-process sandbox; every Open Payments answer it gives is checked against the spec."""
    box = make_sandbox()
    yield box
    box.recorder.assert_clean()
    box.state.close()


@pytest.fixture
def persistent_sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    box = make_sandbox(tmp_path)
    yield box
    box.recorder.assert_clean()
    box.state.close()
