"""``opapprove seller add/list/show/remove/keygen`` and resolve_seller, on a real SQLite store."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.sellers import resolve_seller
from opapprove.approvals.store import Store
from opapprove.cli import exitcodes
from opapprove.openpayments.keys import (
    generate_private_key,
    load_private_key_file,
    private_key_pem,
    public_jwk,
    write_private_key,
)
from opapprove.settings import load_settings
from tests.cli.conftest import Cli, one_error_line

WALLET = "https://ilp.example/shop"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_file(tmp: Path, name: str = "seller.pem") -> tuple[Path, dict[str, str]]:
    key = generate_private_key()
    path = tmp / name
    write_private_key(path, key)
    return path, public_jwk(key, "kid-1").to_dict()


def test_keygen_writes_0600_pem_and_prints_jwk(cli: Cli) -> None:
    out = cli.tmp / "keys" / "k.pem"
    result = cli("seller", "keygen", "--out", str(out), "--kid", "kid-9")
    assert result.exit_code == 0, result.output
    assert mode(out) == 0o600
    jwk = json.loads(result.stdout)
    assert jwk == public_jwk(load_private_key_file(out), "kid-9").to_dict()
    assert "PRIVATE KEY" not in result.output


def test_keygen_refuses_to_overwrite(cli: Cli) -> None:
    out = cli.tmp / "k.pem"
    assert cli("seller", "keygen", "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    again = cli("seller", "keygen", "--out", str(out))
    assert again.exit_code == exitcodes.USAGE
    assert "refusing to overwrite" in one_error_line(again)
    assert out.read_bytes() == before


def test_keygen_with_seller_adds_it_and_json(cli: Cli) -> None:
    result = cli("--json", "seller", "keygen", "--seller", "shop", "--wallet", WALLET)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["seller"]["id"] == "shop"
    key_path = Path(doc["keyFile"])
    # Default location: the data dir next to the store.
    assert key_path.parent == cli.store.parent / "keys"
    assert mode(key_path) == 0o600
    assert doc["publicJwk"]["kid"] == doc["kid"]
    listed = json.loads(cli("seller", "list", "--json").stdout)["sellers"]
    assert [s["id"] for s in listed] == ["shop"]
    assert listed[0]["keyId"] == doc["kid"]


def test_keygen_seller_needs_wallet(cli: Cli) -> None:
    result = cli("seller", "keygen", "--seller", "shop")
    assert result.exit_code == exitcodes.USAGE
    assert "--wallet" in one_error_line(result)


def test_add_with_key_file_then_show_and_remove(cli: Cli) -> None:
    path, jwk = key_file(cli.tmp)
    added = cli(
        "seller", "add", "shop", "--wallet", WALLET, "--key-id", "kid-1", "--key", str(path)
    )
    assert added.exit_code == 0, added.output
    shown = cli("--json", "seller", "show", "shop")
    doc = json.loads(shown.stdout)
    assert doc["seller"]["privateKeyPath"] == str(path.resolve())
    assert doc["keyFileMode"] == "0o600"
    assert doc["publicJwk"] == jwk
    human = cli("seller", "show", "shop")
    assert WALLET in human.stdout and jwk["x"] in human.stdout and "0o600" in human.stdout
    assert "PRIVATE KEY" not in human.output
    removed = cli("seller", "remove", "shop")
    assert removed.exit_code == 0
    assert path.exists(), "a key file the user gave is never deleted"
    assert json.loads(cli("seller", "list", "--json").stdout)["sellers"] == []


@pytest.mark.parametrize("form", ["pem", "base64"])
def test_add_inline_key_is_saved_0600_next_to_store(cli: Cli, form: str) -> None:
    key = generate_private_key()
    pem = private_key_pem(key).decode()
    value = pem if form == "pem" else base64.b64encode(pem.encode()).decode()
    result = cli("seller", "add", "shop", "--wallet", WALLET, "--key-id", "k", "--key", value)
    assert result.exit_code == 0, result.output
    assert pem not in result.output and value not in result.output
    saved = cli.store.parent / "keys" / "shop.pem"
    assert mode(saved) == 0o600
    assert saved.read_text() == pem
    with Store(cli.store) as store:
        seller = store.get_seller("shop")
    assert seller is not None and seller.private_key_path == str(saved)


def test_add_existing_needs_replace(cli: Cli) -> None:
    path, _ = key_file(cli.tmp)
    args = ("seller", "add", "shop", "--wallet", WALLET, "--key-id", "k", "--key", str(path))
    assert cli(*args).exit_code == 0
    again = cli(*args)
    assert again.exit_code == exitcodes.USAGE
    assert "--replace" in one_error_line(again)
    new_wallet = "https://ilp.example/other"
    replaced = cli(
        "seller",
        "add",
        "shop",
        "--wallet",
        new_wallet,
        "--key-id",
        "k2",
        "--key",
        str(path),
        "--replace",
    )
    assert replaced.exit_code == 0, replaced.output
    doc = json.loads(cli("seller", "show", "shop", "--json").stdout)
    assert doc["seller"]["walletAddressUrl"] == new_wallet
    assert doc["seller"]["keyId"] == "k2"


@pytest.mark.parametrize(
    "bad_key",
    ["not a key at all", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"],
)
def test_bad_key_is_exit_3_one_line(cli: Cli, bad_key: str) -> None:
    result = cli("seller", "add", "shop", "--wallet", WALLET, "--key-id", "k", "--key", bad_key)
    assert result.exit_code == exitcodes.CONFIG
    assert "key" in one_error_line(result)
    assert not (cli.store.parent / "keys").exists()


def test_non_ed25519_key_file_is_refused(cli: Cli) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed448

    other_key = ed448.Ed448PrivateKey.generate()
    path = cli.tmp / "ed448.pem"
    path.write_bytes(
        other_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = cli("seller", "add", "shop", "--wallet", WALLET, "--key-id", "k", "--key", str(path))
    assert result.exit_code == exitcodes.CONFIG
    assert "Ed25519" in one_error_line(result)


def test_bad_key_subprocess_no_traceback(cli: Cli) -> None:
    proc = cli.run_process(
        "seller", "add", "shop", "--wallet", WALLET, "--key-id", "k", "--key", "junk"
    )
    assert proc.returncode == exitcodes.CONFIG
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    "wallet", ["ftp://ilp.example/x", "https://ilp.example", "http://ilp.example/x"]
)
def test_add_bad_wallet_is_usage(cli: Cli, wallet: str) -> None:
    path, _ = key_file(cli.tmp)
    result = cli("seller", "add", "shop", "--wallet", wallet, "--key-id", "k", "--key", str(path))
    assert result.exit_code == exitcodes.USAGE
    assert "Invalid wallet address" in one_error_line(result)


def test_payment_pointer_is_normalised(cli: Cli) -> None:
    path, _ = key_file(cli.tmp)
    result = cli(
        "--json",
        "seller",
        "add",
        "shop",
        "--wallet",
        "$ilp.example/shop/",
        "--key-id",
        "k",
        "--key",
        str(path),
    )
    assert json.loads(result.stdout)["seller"]["walletAddressUrl"] == WALLET


def test_bad_seller_id(cli: Cli) -> None:
    path, _ = key_file(cli.tmp)
    result = cli("seller", "add", "../x", "--wallet", WALLET, "--key-id", "k", "--key", str(path))
    assert result.exit_code == exitcodes.USAGE
    one_error_line(result)


def test_remove_unknown(cli: Cli) -> None:
    result = cli("seller", "remove", "ghost")
    assert result.exit_code == exitcodes.USAGE
    assert "ghost" in one_error_line(result)


def test_show_unknown_is_config_error(cli: Cli) -> None:
    result = cli("seller", "show", "ghost")
    assert result.exit_code == exitcodes.CONFIG
    assert "unknown seller 'ghost'" in one_error_line(result)


def test_config_seller_is_listed_and_resolved(cli: Cli) -> None:
    path, jwk = key_file(cli.tmp)
    cli.write_config(
        f'seller_wallet_address_url = "{WALLET}"\n'
        'seller_key_id = "kid-1"\n'
        f'seller_private_key_path = "{path}"\n'
    )
    doc = json.loads(cli("seller", "list", "--json").stdout)
    assert doc["sellers"] == [
        {
            "id": "default-seller",
            "walletAddressUrl": WALLET,
            "keyId": "kid-1",
            "privateKeyPath": str(path),
            "source": "config",
            "createdAt": None,
            "default": True,
        }
    ]
    shown = json.loads(cli("seller", "show", "default-seller", "--json").stdout)
    assert shown["publicJwk"] == jwk and shown["seller"]["source"] == "config"
    settings = load_settings(cli.config, store=cli.store)
    with Store(cli.store) as store:
        assert resolve_seller(settings, store).wallet_address_url == WALLET


def test_resolve_seller_nothing_configured(cli: Cli) -> None:
    settings = load_settings(cli.config, store=cli.store)
    with Store(cli.store) as store, pytest.raises(FlowError) as info:
        resolve_seller(settings, store)
    assert info.value.exit_code == exitcodes.CONFIG
    assert info.value.message.startswith("Configure wallet address first")
    assert "seller add" in (info.value.hint or "")


def test_resolve_seller_incomplete_config(cli: Cli) -> None:
    cli.write_config(f'seller_wallet_address_url = "{WALLET}"\n')
    settings = load_settings(cli.config, store=cli.store)
    with Store(cli.store) as store, pytest.raises(FlowError) as info:
        resolve_seller(settings, store)
    assert "seller_key_id" in (info.value.hint or "")


def test_resolve_seller_store_default_and_named(cli: Cli) -> None:
    path, _ = key_file(cli.tmp)
    for sid in ("default-seller", "other"):
        assert (
            cli(
                "seller",
                "add",
                sid,
                "--wallet",
                f"{WALLET}-{sid}",
                "--key-id",
                "k",
                "--key",
                str(path),
            ).exit_code
            == 0
        )
    settings = load_settings(cli.config, store=cli.store)
    with Store(cli.store) as store:
        assert resolve_seller(settings, store).id == "default-seller"
        assert resolve_seller(settings, store, "other").id == "other"
        with pytest.raises(FlowError) as info:
            resolve_seller(settings, store, "ghost")
    assert "default-seller, other" in (info.value.hint or "")
