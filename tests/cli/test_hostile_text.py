"""A wallet's words that a terminal would act on instead of show: the CLI prints them inert.

A buyer names the wallet (``quote start --buyer``), so anyone can put text in what the CLI
prints: an error description, a ``publicName``. Escape sequences there cleared the screen,
wrote the operator's clipboard (OSC 52) or retitled the window; a bidi override reordered
the line. Each such character now shows as ``?``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from opapprove.servers.serving import serve_in_thread
from tests.cli.conftest import Cli

HOSTILE = "\x1b[2J\x1b]52;c;ZXZpbA==\x07\u202eevil\x9b31m"


async def _refusing(request: Request) -> JSONResponse:
    return JSONResponse({"error": {"code": "x", "description": f"no {HOSTILE}"}}, status_code=400)


async def _named(request: Request) -> JSONResponse:
    base = str(request.base_url).rstrip("/")
    doc = {"id": f"{base}/named", "publicName": f"Shop {HOSTILE}", "assetCode": "USD"}
    doc |= {"assetScale": 2, "authServer": f"{base}/auth", "resourceServer": f"{base}/op"}
    return JSONResponse(doc)


@pytest.fixture(scope="module")
def wallet() -> Iterator[str]:
    app = Starlette(routes=[Route("/refusing", _refusing), Route("/named", _named)])
    with serve_in_thread(app) as server:
        yield server.url


@pytest.mark.parametrize("path", ["refusing", "named"])
def test_a_wallets_words_reach_the_terminal_inert(cli: Cli, wallet: str, path: str) -> None:
    result = cli("wallet", "check", f"{wallet}/{path}")
    shown = result.stdout + result.stderr
    assert "evil" in shown  # the words are shown,
    for char in ("\x1b", "\x07", "\u202e", "\x9b"):  # none of what a terminal acts on
        assert char not in shown
