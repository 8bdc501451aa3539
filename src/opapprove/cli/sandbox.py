"""``opapprove sandbox``: run the embedded Open Payments sandbox; ``approve`` clicks Approve.

The sandbox registers the default seller's public key on its client wallet (``/seller``),
so a seller whose wallet address is that URL can request grants right away.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from opapprove.cli.errors import CliError
from opapprove.cli.options import FeeOption, LatencyOption, RateOption
from opapprove.cli.runtime import Runtime
from opapprove.cli.seller import load_seller_key, seller_or_default

if TYPE_CHECKING:
    import socket

    from rich.console import Console

    from opapprove.approvals.records import Seller
    from opapprove.openpayments.keys import Jwk
    from opapprove.servers.sandbox import SandboxConfig

app = typer.Typer(
    help="Run the embedded, offline Open Payments sandbox; approve on it.",
    invoke_without_command=True,
)

# Whose public key the sandbox registers, at start-up (`sandbox`) or later (`sandbox add-key`).
SellerKeyOption = Annotated[
    str | None,
    typer.Option("--seller", help="Register this seller's key (default: the default seller)."),
]


def _load_keys(paths: list[Path]) -> list[Jwk]:
    from opapprove.servers.sandbox import load_public_keys

    out: list[Jwk] = []
    for path in paths:
        out.extend(load_public_keys(path.expanduser()))
    return out


def _seller_key(runtime: Runtime, seller_id: str | None) -> tuple[Seller | None, list[Jwk]]:
    from opapprove.openpayments.keys import public_jwk

    seller, _ = seller_or_default(runtime, seller_id)
    if seller is None:
        return None, []
    return seller, [public_jwk(load_seller_key(seller), seller.key_id)]


def build_config(
    *,
    seller_keys: list[Jwk],
    extra_keys: list[Jwk],
    public_url: str | None,
    state: Path | None,
    latency: float,
    wait: int,
    wallets: Sequence[str] = (),
    rates: Sequence[str] = (),
    fee: str | None = None,
    created_window: int | None = None,
    settle_delay: float = 0.0,
) -> SandboxConfig:
    from opapprove.openpayments.errors import AmountError
    from opapprove.openpayments.rates import Rates
    from opapprove.servers.sandbox import FeePolicy, SandboxConfig, SandboxConfigError
    from opapprove.servers.sandbox.accounts import with_wallets
    from opapprove.servers.sandbox.config import default_accounts

    extra: dict[str, Any] = {}
    if created_window is not None:
        # 0 turns the check off: Rafiki's leniency (a created a day off still passes).
        extra["created_window"] = created_window or None
    try:
        config = SandboxConfig(
            accounts=with_wallets(default_accounts(), wallets),
            rates=Rates.parse(rates),
            fee=FeePolicy.parse(fee) if fee is not None else FeePolicy(),
            seller_keys=seller_keys,
            extra_keys=extra_keys,
            public_url=public_url.rstrip("/") if public_url else None,
            state_path=state.expanduser() if state else None,
            latency=latency,
            wait_seconds=wait,
            settle_delay=settle_delay,
            **extra,
        )
        config.validate()
        if config.state_path is not None:
            from opapprove.servers.sandbox.storage import check_state_file

            check_state_file(config.state_path)
    except AmountError as exc:
        raise CliError(f"bad sandbox option: {exc.message}", hint=exc.hint) from exc
    except SandboxConfigError as exc:
        raise CliError(f"bad sandbox option: {exc}", hint="see `opapprove sandbox --help`") from exc
    return config


def _bind(port: int) -> socket.socket:
    """The sandbox's socket, bound here once: a port in use is said the way `listen` says it
    (exit 4), and no other process can take the port before the server starts on it."""
    from opapprove.cli.ports import listening_socket

    return listening_socket(
        "127.0.0.1",
        port,
        hint="another process may be using the port: pick another --port (or --port 0),"
        " or stop that process",
    )


@app.callback()
def sandbox(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free).")
    ] = 0,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", help="The origin clients use, if not the bound one."),
    ] = None,
    state: Annotated[
        Path | None, typer.Option("--state", help="Keep accounts and grants in this SQLite file.")
    ] = None,
    key: Annotated[
        list[Path] | None,
        typer.Option(
            "--key", metavar="FILE.jwk", help="Also register this public JWK (or JWKS); repeatable."
        ),
    ] = None,
    latency: LatencyOption = 0.0,
    wait: Annotated[
        int, typer.Option("--wait", min=0, help="continue.wait seconds the auth server asks for.")
    ] = 5,
    seller_id: SellerKeyOption = None,
    wallet: Annotated[
        list[str] | None,
        typer.Option(
            "--wallet",
            metavar="NAME:ASSET:SCALE:BALANCE",
            help="Add a wallet (or redefine buyer/seller), e.g. alice:EUR:2:500.00; repeatable.",
        ),
    ] = None,
    rate: RateOption = None,
    fee: FeeOption = None,
    created_window: Annotated[
        int | None,
        typer.Option(
            "--created-window",
            min=0,
            metavar="SECONDS",
            help="Refuse signatures whose created is further than this from now (default "
            "300; 0: accept any, as Rafiki does).",
        ),
    ] = None,
    settle_delay: Annotated[
        float,
        typer.Option(
            "--settle-delay",
            min=0.0,
            metavar="SECONDS",
            help="An outgoing payment is created unsent and sent this long after (default 0: "
            "at the next request, as Rafiki showed).",
        ),
    ] = 0.0,
) -> None:
    """Serve wallet addresses, an auth server and a resource server on 127.0.0.1 until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from opapprove.cli.startup import settled
    from opapprove.servers.sandbox import describe
    from opapprove.servers.serving import ServerStartError, run_sandbox

    runtime = Runtime.of(ctx)
    seller, seller_keys = _seller_key(runtime, seller_id)
    config = build_config(
        seller_keys=seller_keys,
        extra_keys=_load_keys(key or []),
        public_url=public_url,
        state=state,
        latency=latency,
        wait=wait,
        wallets=wallet or [],
        rates=rate or [],
        fee=fee,
        created_window=created_window,
        settle_delay=settle_delay,
    )
    sock = _bind(port)
    output = runtime.output

    def on_ready(url: str) -> None:
        base = config.public_url or url
        wallets = describe(config, base_url=base)
        data: dict[str, Any] = {
            "url": base,
            "wallets": wallets,
            "seller": None if seller is None else seller.id,
            "rates": config.rates.describe(),
            "fee": config.fee.describe(),
            "admin_approve": f"{base}/_admin/approve",
        }
        output.result(data, lambda console: _render(console, base, wallets, seller, config))
        if seller is not None and not seller.wallet_address_url.startswith(base + "/"):
            output.warn(
                f"seller {seller.id!r} uses {seller.wallet_address_url}, not this sandbox; to pay "
                f"here add a seller with --wallet {base}/seller and the same key"
            )

    settled()
    try:
        run_sandbox(config, sock=sock, on_ready=on_ready)
    except ServerStartError as exc:
        raise CliError(str(exc), hint="pick another --port, or --port 0", kind="transport") from exc
    output.info("sandbox stopped")


def _render(
    console: Console, base: str, wallets: list[dict[str, Any]], seller: Any, config: SandboxConfig
) -> None:
    from opapprove.openpayments.money import from_minor_units

    console.print(f"Open Payments sandbox at {base}", markup=False)
    for w in wallets:
        keys = ", ".join(w["keyIds"]) or "none"
        role = "  (client wallet)" if w["client"] else ""
        balance = from_minor_units(w["balance"], w["assetScale"])
        console.print(
            f"  {w['url']}  {w.get('publicName') or w['name']}, {balance} {w['assetCode']}"
            f", keys: {keys}{role}",
            markup=False,
        )
    if config.rates.table or config.fee.describe() != "none":
        rates = ", ".join(config.rates.describe()) or "none"
        console.print(f"  rates: {rates}; fee: {config.fee.describe()}", markup=False)
    if seller is not None:
        console.print(f"Seller {seller.id}'s key {seller.key_id} is registered.", markup=False)
    else:
        console.print(
            "No seller key registered yet: make one with `opapprove seller keygen`, then "
            "`opapprove sandbox add-key` (no restart needed).",
            markup=False,
        )
    console.print(
        "Approve without a browser: opapprove sandbox approve <redirect URL>", markup=False
    )
    console.print("Press Ctrl-C to stop.", markup=False)


@app.command("approve")
def approve(
    ctx: typer.Context,
    redirect_url: Annotated[
        str, typer.Argument(metavar="REDIRECT_URL", help="The grant's interact.redirect URL.")
    ],
    reject: Annotated[bool, typer.Option("--reject", help="Click Reject instead.")] = False,
) -> None:
    """Click Approve (or Reject) on a sandbox.

    Prints the client's finish URL (the redirect the browser would follow).
    """
    runtime = Runtime.of(ctx)
    parts = urlsplit(redirect_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or "/interact/" not in parts.path:
        raise CliError(
            f"{redirect_url!r} is not a sandbox interaction URL",
            hint="pass the redirect URL `opapprove quote start` printed (.../interact/ID/NONCE)",
        )
    origin = f"{parts.scheme}://{parts.netloc}"
    result, _ = runtime.run(
        _post_admin(
            runtime,
            origin,
            "/_admin/approve",
            {"redirect": redirect_url.strip(), "reject": reject},
            hint="is this an interaction URL of a pending grant on that sandbox?",
        )
    )
    finish_url = result.get("finish_url") or None
    if finish_url and "result=invalid_interaction" in finish_url:
        # A stale tab's click: the wallet sends the browser back, as Rafiki does (1f, 4d).
        raise CliError(
            "that interaction was already decided or cancelled (the wallet answers "
            "result=invalid_interaction)",
            hint="start a new quote for a new approval URL",
        )
    data = {"finish_url": finish_url, "rejected": reject}

    def render(console: Console) -> None:
        if finish_url:
            console.print(finish_url, markup=False, soft_wrap=True)
        else:
            runtime.output.info("decided; the grant has no finish redirect (the client polls)")

    runtime.output.result(data, render)


@app.command("add-key")
def add_key(
    ctx: typer.Context,
    key: Annotated[
        Path | None,
        typer.Option("--key", metavar="FILE.jwk", help="A public JWK file (or a JWKS) to add."),
    ] = None,
    seller_id: SellerKeyOption = None,
    sandbox_url: Annotated[
        str | None,
        typer.Option(
            "--sandbox", metavar="URL", help="The sandbox (default: the seller's wallet origin)."
        ),
    ] = None,
    wallet: Annotated[
        str | None,
        typer.Option("--wallet", help="Wallet name on the sandbox (default: seller's, or seller)."),
    ] = None,
) -> None:
    """Register a public key on a running sandbox's wallet, without a restart.

    For a key made with `opapprove seller keygen` after the sandbox started.
    """
    from opapprove.openpayments.keys import public_jwk

    runtime = Runtime.of(ctx)
    seller = None
    if key is not None and seller_id is not None:
        raise CliError("--key and --seller are two ways to name the key", hint="give one")
    if key is not None:
        jwks = _load_keys([key])
    else:
        seller, note = seller_or_default(runtime, seller_id)
        if seller is None:
            raise CliError(
                f"no key to add: {note}",
                hint="give --key FILE.jwk, or --seller ID (see `opapprove seller keygen`)",
            )
        jwks = [public_jwk(load_seller_key(seller), seller.key_id)]
    origin, name = _sandbox_target(sandbox_url, wallet, seller)
    key_ids: list[str] = []
    added: list[str] = []
    for jwk in jwks:
        body, status = runtime.run(
            _post_admin(
                runtime,
                origin,
                "/_admin/keys",
                {"wallet": name, "jwk": jwk.to_dict()},
                hint="is that sandbox's wallet name right (`opapprove sandbox` lists them)?",
            )
        )
        key_ids = [str(k) for k in body.get("keyIds", [])]
        if status == 201:
            added.append(jwk.kid)
    data = {"sandbox": origin, "wallet": name, "added": added, "keyIds": key_ids}

    def render(console: Console) -> None:
        what = f"added {', '.join(added)}" if added else "already there"
        console.print(
            f"{origin}/{name}: {what}; its keys: {', '.join(key_ids)}", markup=False, soft_wrap=True
        )

    runtime.output.result(data, render)


def _sandbox_target(
    sandbox_url: str | None, wallet: str | None, seller: Seller | None
) -> tuple[str, str]:
    """The sandbox origin and wallet name: given, else taken from the seller's wallet URL."""
    seller_parts = urlsplit(seller.wallet_address_url) if seller is not None else None
    if sandbox_url is not None:
        parts = urlsplit(sandbox_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise CliError(
                f"--sandbox {sandbox_url!r} is not an http(s) URL",
                hint="give the URL `opapprove sandbox` printed, e.g. http://127.0.0.1:4000",
            )
        origin = f"{parts.scheme}://{parts.netloc}"
    elif seller_parts is not None:
        origin = f"{seller_parts.scheme}://{seller_parts.netloc}"
    else:
        raise CliError(
            "which sandbox?", hint="give --sandbox URL (what `opapprove sandbox` printed)"
        )
    if wallet is None and seller_parts is not None and origin.endswith(seller_parts.netloc):
        wallet = seller_parts.path.strip("/").rsplit("/", 1)[-1] or None
    return origin, (wallet or "seller").strip("/")


async def _post_admin(
    runtime: Runtime, origin: str, path: str, payload: dict[str, Any], *, hint: str
) -> tuple[dict[str, Any], int]:
    """POST to a sandbox's operator route; the JSON answer and its status, or a CliError."""
    import httpx

    from opapprove.openpayments.transport import system_tls
    from opapprove.openpayments.urls import check_url

    settings = runtime.settings()
    target = f"{origin}{path}"
    check_url(target, allow_http=bool(settings.allow_http))
    try:
        async with httpx.AsyncClient(timeout=float(settings.timeout), verify=system_tls()) as http:
            response = await http.post(target, json=payload)
    except httpx.HTTPError as exc:
        raise CliError(
            f"cannot reach the sandbox at {origin}: {exc or type(exc).__name__}",
            hint="is `opapprove sandbox` running there?",
            kind="transport",
        ) from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code not in (200, 201) or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        why = error.get("description") if isinstance(error, dict) else None
        raise CliError(
            f"the sandbox refused: {why or f'HTTP {response.status_code}'}",
            hint=hint,
            kind="refused",
        )
    return body, response.status_code
