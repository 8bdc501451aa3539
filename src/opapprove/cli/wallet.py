"""``opapprove wallet check``: is this URL a wallet address, and can the seller sign for it?

The second question is the one behind most ``invalid_client`` errors: the seller's key id
must be in the seller wallet's ``jwks.json`` and the JWK there must be the private key's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli import exitcodes
from opapprove.cli.errors import CliError, ErrorReport, classify
from opapprove.cli.runtime import Runtime
from opapprove.cli.seller import load_seller_key, parse_wallet, seller_or_default

if TYPE_CHECKING:
    from rich.console import Console

    from opapprove.approvals.records import Seller
    from opapprove.openpayments.client import OpenPaymentsClient

app = typer.Typer(
    help="Check wallet addresses and the seller's published keys.", no_args_is_help=True
)

INVALID = "Invalid wallet address"
FORMAT_HINT = "verify the format: https://ilp.interledger-test.dev/username"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    exit_code: int = exitcodes.OK

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class Report:
    url: str
    wallet: dict[str, Any] = field(default_factory=dict)
    wallet_keys: list[str] = field(default_factory=list)
    seller: Seller | None = None
    seller_note: str | None = None
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str, exit_code: int = exitcodes.CONFIG) -> None:
        self.checks.append(Check(name, ok, detail, exitcodes.OK if ok else exit_code))

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def exit_code(self) -> int:
        return next((c.exit_code for c in self.checks if not c.ok), exitcodes.OK)

    def verdict(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        if failed:
            return "PROBLEM: " + "; ".join(c.detail for c in failed)
        what = f"{self.wallet.get('id', self.url)} is a wallet address"
        asset = self.wallet.get("assetCode")
        if asset is not None:
            what += f" ({asset}, scale {self.wallet.get('assetScale')})"
        if self.seller is not None:
            what += (
                f"; seller {self.seller.id!r} key {self.seller.key_id!r} is published "
                "and matches its private key"
            )
        return "OK: " + what


def _invalid(url: str, exc: BaseException) -> CliError:
    report = classify(exc)
    hint = report.hint or FORMAT_HINT
    return CliError(
        f"{INVALID} {url}: {report.message}",
        hint=hint,
        kind=report.kind,
        exit_code=report.exit_code,
    )


async def _run_checks(client: OpenPaymentsClient, report: Report, seller: Seller | None) -> None:
    from opapprove.openpayments.errors import OpenPaymentsError

    try:
        wallet = await client.get_wallet_address(report.url)
    except OpenPaymentsError as exc:
        raise _invalid(report.url, exc) from exc
    report.wallet = wallet.model_dump(by_alias=True, exclude_none=True, mode="json")
    report.add("wallet address document", True, "fetched and valid")
    published_id = str(report.wallet.get("id", ""))
    if published_id.rstrip("/") != report.url.rstrip("/"):
        report.add(
            "wallet address id",
            False,
            f"the document's id is {published_id!r}, not the URL asked for ({report.url}); "
            "use the id as the wallet address",
            exitcodes.USAGE,
        )
    jwks_by_url: dict[str, dict[str, dict[str, Any]] | ErrorReport] = {}

    async def keys_of(url: str) -> dict[str, dict[str, Any]] | ErrorReport:
        if url not in jwks_by_url:
            try:
                jwks = await client.get_keys(url)
            except OpenPaymentsError as exc:
                jwks_by_url[url] = classify(exc)
            else:
                dumped = jwks.model_dump(by_alias=True, exclude_none=True, mode="json")
                jwks_by_url[url] = {str(k.get("kid")): k for k in dumped.get("keys", [])}
        return jwks_by_url[url]

    own = await keys_of(report.url)
    if isinstance(own, ErrorReport):
        report.add(
            "wallet jwks.json", False, f"{report.url}/jwks.json: {own.message}", own.exit_code
        )
    else:
        report.wallet_keys = sorted(own)
        report.add("wallet jwks.json", True, f"{len(own)} key(s) published")
    if seller is not None:
        await _check_seller(report, seller, keys_of)


async def _check_seller(report: Report, seller: Seller, keys_of: Any) -> None:
    from opapprove.openpayments.keys import Jwk, public_jwk

    jwks_url = f"{seller.wallet_address_url}/jwks.json"
    try:
        private_key = load_seller_key(seller)
    except CliError as exc:
        report.add("seller private key", False, exc.message)
        return
    published = await keys_of(seller.wallet_address_url)
    if isinstance(published, ErrorReport):
        report.add(
            "seller jwks.json", False, f"{jwks_url}: {published.message}", published.exit_code
        )
        return
    jwk = published.get(seller.key_id)
    if jwk is None:
        report.add(
            "seller key id published",
            False,
            f"key id {seller.key_id!r} is not in {jwks_url} (it has: "
            f"{', '.join(sorted(published)) or 'no keys'}); upload the public JWK from "
            f"`opapprove seller show {seller.id}` to the wallet, or fix the key id",
        )
        return
    report.add("seller key id published", True, f"key id {seller.key_id!r} is in {jwks_url}")
    expected = public_jwk(private_key, seller.key_id).x
    try:
        matches = Jwk.from_dict(jwk).x == expected
    except Exception:
        matches = False
    if matches:
        report.add("seller key matches", True, "the published JWK is the private key's")
    else:
        report.add(
            "seller key matches",
            False,
            f"the JWK published as {seller.key_id!r} is not the public key of "
            f"{seller.private_key_path}; upload the right key or use the matching private key",
        )


@app.command("check")
def check(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="URL", help="Wallet address ($ pointer or https).")],
    seller_id: Annotated[
        str | None,
        typer.Option("--seller", help="Also check this seller's published key (default seller)."),
    ] = None,
) -> None:
    """Check a wallet address, and that the seller's key is published.

    Exit 0 only when every check passes; the last line is the verdict (OK: / PROBLEM:).
    """
    runtime = Runtime.of(ctx)
    settings = runtime.settings()
    wallet_url = parse_wallet(url, settings)
    seller, seller_note = seller_or_default(runtime, seller_id)
    report = Report(url=wallet_url, seller=seller, seller_note=seller_note)

    async def go() -> None:
        async with runtime.client() as client:
            await _run_checks(client, report, seller)

    runtime.run(go())
    verdict = report.verdict()
    data: dict[str, Any] = {
        "verdict": verdict,
        "wallet": report.wallet,
        "wallet_keys": report.wallet_keys,
        "seller": None
        if seller is None
        else {
            "id": seller.id,
            "wallet_address_url": seller.wallet_address_url,
            "key_id": seller.key_id,
        },
        "seller_note": seller_note,
        "checks": [c.to_json() for c in report.checks],
    }

    def render(console: Console) -> None:
        _render(console, report, verdict)

    runtime.conclude(data, render, ok=report.ok, exit_code=report.exit_code)


def _render(console: Console, report: Report, verdict: str) -> None:
    w = report.wallet
    rows = [
        ("wallet", report.url),
        ("id", str(w.get("id", ""))),
        ("publicName", str(w.get("publicName", "-"))),
        ("asset", f"{w.get('assetCode')} (scale {w.get('assetScale')})"),
        ("authServer", str(w.get("authServer", ""))),
        ("resourceServer", str(w.get("resourceServer", ""))),
        ("keys", ", ".join(report.wallet_keys) or "-"),
    ]
    if report.seller is not None:
        rows.append(("seller", f"{report.seller.id} ({report.seller.wallet_address_url})"))
        rows.append(("seller key id", report.seller.key_id))
    elif report.seller_note:
        rows.append(("seller", report.seller_note))
    for label, value in rows:
        console.print(f"  {label:<15} {value}", markup=False)
    for c in report.checks:
        mark = "ok  " if c.ok else "FAIL"
        console.print(f"  [{mark}] {c.name}: {c.detail}", markup=False)
    style = "bold green" if report.ok else "bold red"
    console.print(verdict, style=style, markup=False)
