"""``opapprove seller ...``: the sellers (client wallets + signing keys) payments are made for.

A seller is a client wallet address, the key id published in its ``jwks.json``, and the
private key file. Sellers live in the store; the config's ``seller_*`` keys describe one
more, the default seller, so the seed's environment variables keep working.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from opapprove.cli.errors import CliError, config_error
from opapprove.cli.runtime import Runtime

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from rich.console import Console

    from opapprove.approvals.records import Seller
    from opapprove.approvals.store import Store
    from opapprove.settings import Settings

app = typer.Typer(
    help="Add, list, show and remove sellers; generate signing keys.", no_args_is_help=True
)

# The seller's wallet address: `seller add` needs it, `seller keygen` takes it with --seller.
WALLET_OPTION = typer.Option("--wallet", help="The seller's (client) wallet address URL.")

_SELLER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONFIG_SOURCE = "config"
STORE_SOURCE = "store"


# --------------------------------------------------------------------------- helpers


def check_seller_id(seller_id: str) -> str:
    if not _SELLER_ID.match(seller_id):
        raise CliError(
            f"seller id {seller_id!r} is not allowed",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return seller_id


def parse_wallet(url: str, settings: Settings) -> str:
    from opapprove.openpayments.errors import WalletAddressError
    from opapprove.openpayments.urls import parse_wallet_address

    try:
        return parse_wallet_address(url, allow_http=bool(settings.allow_http))
    except WalletAddressError as exc:
        raise CliError(
            f"Invalid wallet address: {exc.message}",
            hint=exc.hint or "use the form https://ilp.interledger-test.dev/username",
            kind="wallet_address",
        ) from exc


def settings_seller(settings: Settings) -> Seller | None:
    """The seller described by the config's ``seller_*`` keys, if they are all set."""
    from opapprove.approvals.sellers import seller_from_settings

    return seller_from_settings(settings)


_HOW_TO_ADD = (
    "run `opapprove seller add ID --wallet URL --key-id KID --key FILE` "
    "(or `opapprove seller keygen --seller ID --wallet URL`)"
)


def seller_or_default(runtime: Runtime, seller_id: str | None) -> tuple[Seller | None, str | None]:
    """The named seller (must exist), else the default seller if there is one, else a note.

    Without a name, a read-only command must not create a store file as a side effect, so
    a store that does not exist yet only means "no sellers in the store".
    """
    from opapprove.approvals.errors import FlowError
    from opapprove.approvals.sellers import resolve_seller

    settings = runtime.settings()
    if seller_id is not None:
        return resolve_seller(settings, runtime.store(), seller_id), None
    if not runtime.store_exists():
        seller = settings_seller(settings)
        if seller is not None:
            return seller, None
        return None, "no seller is configured"
    try:
        return resolve_seller(settings, runtime.store(), None), None
    except FlowError as exc:
        return None, exc.message


def load_seller_key(seller: Seller) -> Ed25519PrivateKey:
    from opapprove.approvals.sellers import load_key
    from opapprove.openpayments.errors import KeyLoadError

    try:
        return load_key(seller)
    except KeyLoadError as exc:
        raise config_error(
            f"seller {seller.id!r}: {exc.message}",
            exc.hint or f"fix it with `opapprove seller add {seller.id} --replace ...`",
        ) from exc


def file_mode(path: Path) -> str | None:
    try:
        return oct(stat.S_IMODE(path.stat().st_mode))
    except OSError:
        return None


def _too_open(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o077)
    except OSError:
        return False


def _write_key_file(path: Path, pem: bytes, *, replace: bool) -> None:
    """Create ``path`` 0600 with ``pem``; with ``replace`` swap it in atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not replace:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise CliError(
                f"refusing to overwrite {path}",
                hint="choose another --out, or remove the file yourself",
            ) from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return
    from opapprove.cli.files import write_whole

    write_whole(path, pem)


def _store_seller(
    store: Store,
    seller_id: str,
    wallet_url: str,
    key_id: str,
    key_file: Path,
    *,
    replace: bool = False,
) -> Seller:
    """Add (or with ``replace`` overwrite) a seller made now, with its key file's path."""
    from opapprove.approvals.records import Seller

    seller = Seller(
        id=seller_id,
        wallet_address_url=wallet_url,
        key_id=key_id,
        private_key_path=str(key_file),
        created_at=time.time(),
    )
    return store.add_seller(seller, replace=replace)


def _key_argument_is_file(value: str) -> Path | None:
    text = value.strip()
    if "\n" in text or text.startswith("-----") or len(text) > 4096:
        return None
    path = Path(text).expanduser()
    return path if path.is_file() else None


def seller_json(seller: Seller, source: str) -> dict[str, Any]:
    return {
        "id": seller.id,
        "wallet_address_url": seller.wallet_address_url,
        "key_id": seller.key_id,
        "private_key_path": seller.private_key_path,
        "source": source,
        "created_at": seller.created_at or None,
    }


def _check_published(runtime: Runtime, wallet_url: str, jwk: dict[str, str]) -> str:
    """Compare the key with ``{wallet}/jwks.json``: published, missing, mismatch, unreachable.

    Warns on anything but published; a seller is still added (the key may come later)."""
    from opapprove.openpayments.errors import OpenPaymentsError

    async def fetch() -> list[tuple[str, str]]:
        async with runtime.client(retries=0) as client:
            published = await client.get_keys(wallet_url)
        return [(k.kid, k.x) for k in published.keys]

    try:
        published = runtime.run(fetch())
    except OpenPaymentsError as exc:
        runtime.output.warn(
            f"could not compare the key with {wallet_url}/jwks.json ({exc.message}); "
            "check later with `opapprove wallet check`"
        )
        return "unreachable"
    xs = dict(published)
    kid = jwk["kid"]
    if kid not in xs:
        kids = ", ".join(sorted(xs)) or "no keys"
        runtime.output.warn(
            f"key id {kid} is not in {wallet_url}/jwks.json (it has: {kids}): upload the public "
            "JWK below to the wallet, or fix --key-id"
        )
        return "missing"
    if xs[kid] != jwk["x"]:
        runtime.output.warn(
            f"{wallet_url}/jwks.json publishes key id {kid} with another public key: requests "
            "signed with this private key will be refused; give the matching --key"
        )
        return "mismatch"
    return "published"


# --------------------------------------------------------------------------- commands


@app.command("add")
def add(
    ctx: typer.Context,
    seller_id: Annotated[str, typer.Argument(metavar="ID", help="A name for the seller.")],
    wallet: Annotated[str, WALLET_OPTION],
    key_id: Annotated[
        str, typer.Option("--key-id", help="The key id (kid) in the wallet's jwks.json.")
    ],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            help="Ed25519 private key: a file path, PEM text, or base64-encoded PEM "
            "(inline keys are saved to a 0600 file next to the store).",
        ),
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite an existing seller of this id.")
    ] = False,
    no_check: Annotated[
        bool,
        typer.Option("--no-check", help="Do not compare the key with the wallet's jwks.json."),
    ] = False,
) -> None:
    """Add a seller: wallet address, key id, private key.

    The seed's POST /sellers. An inline key is saved to a 0600 file next to the store.
    The key is compared with the wallet's published jwks.json when it can be reached (a
    mismatch is a warning: the key may be uploaded later).
    """
    from opapprove.openpayments.errors import KeyLoadError
    from opapprove.openpayments.keys import load_private_key, private_key_pem, public_jwk

    runtime = Runtime.of(ctx)
    check_seller_id(seller_id)
    settings = runtime.settings()
    wallet_url = parse_wallet(wallet, settings)
    if not key_id.strip():
        raise CliError("--key-id is empty", hint="give the kid shown next to the key in the wallet")
    key_file = _key_argument_is_file(key)
    try:
        private_key = load_private_key(key_file if key_file is not None else key)
    except KeyLoadError as exc:
        raise config_error(f"bad --key: {exc.message}", exc.hint) from exc
    store = runtime.store()
    existing = store.get_seller(seller_id)
    if existing is not None and not replace:
        raise CliError(
            f"seller {seller_id!r} already exists",
            hint="pass --replace to overwrite it, or `opapprove seller remove` it first",
        )
    if key_file is None:
        key_file = runtime.data_dir() / "keys" / f"{seller_id}.pem"
        _write_key_file(key_file, private_key_pem(private_key), replace=replace)
    else:
        key_file = key_file.resolve()
        if _too_open(key_file):
            runtime.output.warn(
                f"{key_file} is readable by others (mode {file_mode(key_file)}); "
                f"run: chmod 600 {key_file}"
            )
    seller = _store_seller(store, seller_id, wallet_url, key_id.strip(), key_file, replace=replace)
    jwk = public_jwk(private_key, seller.key_id).to_dict()
    check = "skipped" if no_check else _check_published(runtime, wallet_url, jwk)
    data = {"seller": seller_json(seller, STORE_SOURCE), "public_jwk": jwk, "key_check": check}

    def render(console: Console) -> None:
        verb = "replaced" if existing is not None else "added"
        console.print(f"Seller {seller.id} {verb}.", markup=False)
        _print_seller(console, seller, jwk)

    runtime.output.result(data, render)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List the sellers (the store's, and the config's default seller)."""
    runtime = Runtime.of(ctx)
    settings = runtime.settings()
    rows = [seller_json(s, STORE_SOURCE) for s in runtime.store().list_sellers()]
    from_config = settings_seller(settings)
    if from_config is not None and all(r["id"] != from_config.id for r in rows):
        rows.append(seller_json(from_config, CONFIG_SOURCE))
    for row in rows:
        row["default"] = row["id"] == settings.seller_id

    def render(console: Console) -> None:
        if not rows:
            console.print("No sellers. " + _HOW_TO_ADD, markup=False)
            return
        # Blocks, not a table: long URLs and paths stay whole and copyable at any width.
        for row in rows:
            tags = ", ".join(t for t in ("default" if row["default"] else "", row["source"]) if t)
            console.print(f"{row['id']}  ({tags})", markup=False)
            console.print(f"  wallet:    {row['wallet_address_url']}", markup=False)
            console.print(f"  key id:    {row['key_id']}", markup=False)
            console.print(f"  key file:  {row['private_key_path']}", markup=False)

    runtime.output.result({"sellers": rows}, render)


@app.command("show")
def show(
    ctx: typer.Context,
    seller_id: Annotated[str, typer.Argument(metavar="ID", help="The seller to show.")],
) -> None:
    """Show a seller and the public JWK to upload (never the key)."""
    from opapprove.approvals.sellers import resolve_seller
    from opapprove.openpayments.keys import public_jwk

    runtime = Runtime.of(ctx)
    settings = runtime.settings()
    seller = resolve_seller(settings, runtime.store(), seller_id)
    source = STORE_SOURCE if runtime.store().get_seller(seller.id) else CONFIG_SOURCE
    path = Path(seller.private_key_path)
    private_key = load_seller_key(seller)
    jwk = public_jwk(private_key, seller.key_id).to_dict()
    data: dict[str, Any] = {
        "seller": seller_json(seller, source),
        "key_file_mode": file_mode(path),
        "key_file_private": not _too_open(path),
        "public_jwk": jwk,
    }

    def render(console: Console) -> None:
        _print_seller(console, seller, jwk, source=source)

    runtime.output.result(data, render)
    if _too_open(path):
        runtime.output.warn(f"{path} is readable by others; run: chmod 600 {path}")


def _print_seller(
    console: Console, seller: Seller, jwk: dict[str, Any], *, source: str | None = None
) -> None:
    import json

    path = Path(seller.private_key_path)
    lines = [
        f"  id:        {seller.id}" + (f"  ({source})" if source else ""),
        f"  wallet:    {seller.wallet_address_url}",
        f"  key id:    {seller.key_id}",
        f"  key file:  {path}  (mode {file_mode(path) or 'missing'})",
        "  public JWK (upload it to the wallet's developer keys):",
        "  " + json.dumps(jwk),
    ]
    for line in lines:
        console.print(line, markup=False)


@app.command("remove")
def remove(
    ctx: typer.Context,
    seller_id: Annotated[str, typer.Argument(metavar="ID", help="The seller to remove.")],
) -> None:
    """Remove a seller from the store (its key file is left in place)."""
    runtime = Runtime.of(ctx)
    store = runtime.store()
    seller = store.get_seller(seller_id)
    if seller is None or not store.remove_seller(seller_id):
        from_config = settings_seller(runtime.settings())
        hint = "see `opapprove seller list`"
        if from_config is not None and from_config.id == seller_id:
            hint = "this seller comes from the config's seller_* keys: edit the config instead"
        raise CliError(f"no seller {seller_id!r} in the store", hint=hint)
    data = {"removed": seller_id, "key_file_kept": seller.private_key_path}

    def render(console: Console) -> None:
        console.print(f"Seller {seller_id} removed.", markup=False)
        console.print(f"Its key file is kept: {seller.private_key_path}", markup=False)

    runtime.output.result(data, render)


@app.command("keygen")
def keygen(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the PEM (default: <data dir>/keys/<kid>.pem)."),
    ] = None,
    kid: Annotated[str | None, typer.Option("--kid", help="Key id (default: a new UUID).")] = None,
    seller_id: Annotated[
        str | None,
        typer.Option("--seller", help="Also add a seller with this id (needs --wallet)."),
    ] = None,
    wallet: Annotated[str | None, WALLET_OPTION] = None,
) -> None:
    """Generate an Ed25519 key (0600 PEM); print its public JWK.

    Upload the JWK to the wallet (developer keys). Never overwrites a file.
    """
    from opapprove.openpayments.keys import (
        generate_private_key,
        new_key_id,
        private_key_pem,
        public_jwk,
    )

    runtime = Runtime.of(ctx)
    if (seller_id is None) != (wallet is None):
        raise CliError("--seller and --wallet go together", hint="give both, or neither")
    key_id = (kid or new_key_id()).strip()
    if not key_id:
        raise CliError("--kid is empty", hint="leave it out to get a new UUID")
    wallet_url: str | None = None
    store: Store | None = None
    if seller_id is not None and wallet is not None:
        check_seller_id(seller_id)
        wallet_url = parse_wallet(wallet, runtime.settings())
        store = runtime.store()
        if store.get_seller(seller_id) is not None:
            raise CliError(
                f"seller {seller_id!r} already exists",
                hint="pick another id, or `opapprove seller remove` it first",
            )
    if out is None:
        name = seller_id or re.sub(r"[^A-Za-z0-9._-]", "_", key_id)
        out = runtime.data_dir() / "keys" / f"{name}.pem"
    out = out.expanduser()
    key = generate_private_key()
    _write_key_file(out, private_key_pem(key), replace=False)
    jwk = public_jwk(key, key_id).to_dict()
    data: dict[str, Any] = {"key_file": str(out.resolve()), "kid": key_id, "public_jwk": jwk}
    if store is not None and seller_id is not None and wallet_url is not None:
        seller = _store_seller(store, seller_id, wallet_url, key_id, out.resolve())
        data["seller"] = seller_json(seller, STORE_SOURCE)

    def render(console: Console) -> None:
        import json

        # The JWK alone on stdout, so `opapprove seller keygen > jwk.json` just works.
        runtime.output.info(f"Private key written to {out} (mode 0600).")
        if "seller" in data:
            runtime.output.info(f"Seller {seller_id} added for {wallet_url}.")
        runtime.output.info(
            "Upload this public JWK to the wallet (developer keys; on an opapprove sandbox: "
            "`opapprove sandbox add-key`):"
        )
        console.print(json.dumps(jwk), markup=False)

    runtime.output.result(data, render)
