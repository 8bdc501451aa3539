"""What a test does when a real part it needs (PostgreSQL, Chromium, Node, curl) is missing.

On a person's machine it skips with a line saying how to install the part; in CI
(``CI=true``) it fails, because there a skip would hide that the tests never ran.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def skip_or_fail(reason: str, *, tests: str) -> NoReturn:
    """Skip with ``reason``, or under CI fail saying which ``tests`` CI must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must run {tests})", pytrace=False)
    pytest.skip(reason)
