"""The pytest plugin as a user meets it: a test file using only its fixtures (pytester)."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from opapprove.testing import SandboxStartError, running_sandbox

pytest_plugins = ["pytester"]

# What a marketplace's own test file looks like: only the fixtures, a full approval.
SAMPLE = """
import asyncio

import pytest

from opapprove.approvals.flow import Flow
from opapprove.approvals.records import State
from opapprove.approvals.store import Store
from opapprove.servers.sandbox import AccountConfig


def pay(op_sandbox, op_seller, tmp_path, amount="12.34"):
    settings = op_seller.settings(store=tmp_path / "op.db")

    async def run():
        with Store(settings.store) as store:
            async with Flow(store, settings) as flow:
                pending = await flow.start_quote(
                    offer_id="order-1", buyer_wallet=op_sandbox.buyer_url, amount=amount
                )
                finish_url = op_sandbox.approve(pending.interact_redirect)
                return await flow.finish_url(finish_url)

    return asyncio.run(run())


def test_buyer_approves_and_pays(op_sandbox, op_seller, tmp_path):
    before = op_sandbox.balance("seller")
    done = pay(op_sandbox, op_seller, tmp_path)
    assert done.state == State.COMPLETED
    assert op_sandbox.balance("seller") == before + 1234


def test_a_fault_lasts_one_test(op_sandbox, pytestconfig):
    assert op_sandbox.port == int(pytestconfig.getini("op_sandbox_port"))
    op_sandbox.fault("create-outgoing-payment", status=500)
    op_sandbox.latency(0.5)


def test_the_next_test_has_no_fault(op_sandbox, op_seller, tmp_path):
    assert pay(op_sandbox, op_seller, tmp_path, "1.00").state == State.COMPLETED


def test_rejected(op_sandbox, op_seller, tmp_path):
    settings = op_seller.settings(store=tmp_path / "op.db")

    async def run():
        with Store(settings.store) as store:
            async with Flow(store, settings) as flow:
                pending = await flow.start_quote(
                    offer_id="order-2", buyer_wallet=op_sandbox.buyer_url, amount="5"
                )
                return await flow.finish_url(op_sandbox.reject(pending.interact_redirect))

    with pytest.raises(Exception, match="declined|reject"):
        asyncio.run(run())


@pytest.mark.op_sandbox_fresh
def test_a_fresh_sandbox_of_its_own(op_sandbox, _op_sandbox_session):
    assert op_sandbox.url != _op_sandbox_session.url
    assert op_sandbox.balance("seller") == 0
    assert {a["name"] for a in op_sandbox.accounts()} == {"buyer", "seller"}


@pytest.mark.op_sandbox_fresh(accounts=[AccountConfig(name="seller", balance=7)])
def test_a_fresh_sandbox_set_up_differently(op_sandbox):
    assert [(a["name"], a["balance"]) for a in op_sandbox.accounts()] == [("seller", 7)]


@pytest.mark.op_sandbox_fresh(accounts=[AccountConfig(name="Bad Name")])
def test_a_sandbox_that_cannot_start(op_sandbox):
    raise AssertionError("never runs")
"""


def test_sample_file_runs_a_full_approval(pytester: pytest.Pytester) -> None:
    """One inner session (they cost ~1 s each): approvals, isolation, a failure, no leaks."""
    urls = pytester.path / "urls.txt"
    pytester.makepyfile(test_shop=SAMPLE)
    with socket.socket() as probe:  # a port for the session's sandbox, through the ini file
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pytester.makeini(f"[pytest]\nop_sandbox_port = {port}\n")
    pytester.makeconftest(
        f"""
        import pytest

        @pytest.fixture(autouse=True)
        def note_url(request):
            if "op_sandbox" in request.fixturenames:
                url = request.getfixturevalue("op_sandbox").url
                with open({str(urls)!r}, "a") as out:
                    out.write(url + "\\n")
        """
    )
    pytester.makepyfile(
        test_zfails="""
        def test_fails(op_sandbox):
            op_sandbox.accounts()
            assert False, "the shop broke"
        """
    )
    before = {t.ident for t in threading.enumerate()}
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6, failed=1, errors=1)
    # The failed test's report carries the sandbox's lines from that test only.
    result.stdout.fnmatch_lines(
        ["*op_sandbox log (http://127.0.0.1:*)*", "*GET /_admin/accounts -> 200*"]
    )
    assert "POST /op/outgoing-payments" not in result.stdout.str()
    # A sandbox that cannot start errors the test with the sandbox's own log.
    result.stdout.fnmatch_lines(
        [
            "*op_sandbox: the sandbox could not start: account name 'Bad Name' cannot be used*",
            "*--- sandbox log ---*",
            "*starting on 127.0.0.1:a free port*",
        ]
    )
    served = set(urls.read_text().split())
    assert len(served) == 3  # the session's sandbox and two fresh ones
    for url in served:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/buyer", timeout=2)
    left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert not left, left


def test_a_port_in_use_says_so_with_the_log() -> None:
    """What the fixture fails a test with when --op-sandbox-port is taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SandboxStartError) as caught, running_sandbox(port=port):
            pass
    assert f"port {port} on 127.0.0.1 is in use" in caught.value.message
    assert f"starting on 127.0.0.1:{port}" in caught.value.log
    assert "cannot start: " in caught.value.log
