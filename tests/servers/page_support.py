"""Load a listener page as a browser does: again while it asks to refresh itself (bounded)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import httpx

_REFRESH = re.compile(r'<meta http-equiv="refresh" content="([0-9.]+)">')
LIMIT = 400  # loads; at PAUSE apart, 20 s


PAUSE = 0.05  # quicker than a browser's refresh: the tests only need the sequence


def refreshes(page: httpx.Response) -> bool:
    return _REFRESH.search(page.text) is not None


def follow(get: Callable[[str], httpx.Response], url: str) -> list[httpx.Response]:
    pages: list[httpx.Response] = []
    for _ in range(LIMIT):
        pages.append(get(url))
        if not refreshes(pages[-1]):
            return pages
        time.sleep(PAUSE)
    raise AssertionError(f"the page still refreshes after {LIMIT} loads: {pages[-1].text[:300]}")


async def afollow(
    get: Callable[[str], Awaitable[httpx.Response]], url: str
) -> list[httpx.Response]:
    pages: list[httpx.Response] = []
    for _ in range(LIMIT):
        pages.append(await get(url))
        if not refreshes(pages[-1]):
            return pages
        await asyncio.sleep(PAUSE)
    raise AssertionError(f"the page still refreshes after {LIMIT} loads: {pages[-1].text[:300]}")
