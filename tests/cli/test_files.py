"""Files the CLI writes: reports follow the umask, key files are 0600 whatever it is."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from opapprove.cli.files import write_report, write_whole
from opapprove.openpayments.keys import generate_private_key, private_key_pem
from tests.cli.conftest import Cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[int]:
    """A umask that lets the group read and nobody else, for this test only."""
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def test_a_report_is_as_readable_as_the_umask_allows(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "reports" / "smoke.xml"
    write_report(target, "<a/>", what="the JUnit report", hint="-")
    assert mode(target) == 0o640
    write_report(target, "<b/>", what="the JUnit report", hint="-")
    assert (target.read_text(), mode(target)) == ("<b/>", 0o640)
    assert os.listdir(target.parent) == ["smoke.xml"]


def test_a_private_file_is_0600_even_under_an_open_umask(tmp_path: Path, umask: int) -> None:
    os.umask(0)
    target = tmp_path / "key.pem"
    write_whole(target, b"first")
    write_whole(target, b"second")
    assert (target.read_bytes(), mode(target)) == (b"second", 0o600)


def test_a_replaced_inline_key_stays_0600(cli: Cli, umask: int) -> None:
    os.umask(0)
    for kid in ("k1", "k2"):
        pem = private_key_pem(generate_private_key()).decode()
        args = ["--wallet", "https://ilp.example/shop", "--key-id", kid, "--key", pem]
        result = cli("seller", "add", "shop", *args, "--replace")
        assert result.exit_code == 0, result.output
        saved = cli.store.parent / "keys" / "shop.pem"
        assert (saved.read_text(), mode(saved)) == (pem, 0o600)
