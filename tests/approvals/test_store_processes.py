"""Eight processes on one store file for a sustained run: nothing lost, nobody sees "locked".

Like a real deployment, all against one sandbox served on loopback:
- a shop starting quotes, which the buyer approves at once (each callback URL is then
  delivered twice, as browsers and proxies do);
- two listeners finishing those callbacks (often the same one at the same moment);
- two ``pending replay`` runs (``replay_many``) carrying on whatever is past approval;
- three status readers that re-read every grant and its audit trail (and refresh created
  payments, which writes too).
Meanwhile the sandbox drops the connection after creating a payment now and then, so the
money-moves-once guard has work to do. Afterwards every grant completes (a final replay
drains what a drop left behind) with exactly one payment, every audit trail chains, no
reader ever saw a version go back, and no output mentions a locked database.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from opapprove.approvals.errors import FlowError
from opapprove.approvals.flow import Flow
from opapprove.approvals.records import FINAL_STATES, HAPPY_PATH, State
from opapprove.approvals.store import Store
from opapprove.settings import load_settings
from tests.approvals.crash_support import payments_by_pending
from tests.processes import worker_context
from tests.sandbox_fixtures import make_sandbox

RUN_SECONDS = 5.0  # how long the shop keeps starting quotes (the others run 1 s longer)
WAIT = 90.0  # only guards against a hang, never asserted on
LISTENERS, REPLAYERS, READERS = 2, 2, 3
AMOUNT_MINOR = 1  # "0.01": the buyer's balance lasts for many thousand grants
# FlowError kinds a process may legitimately meet while others work on the same grants.
EXPECTED_KINDS = {"busy", "transport", "waiting", "stale", "input"}
PAST_APPROVAL = (State.APPROVED, State.GRANT_ISSUED, State.PAYING, State.PAYMENT_CREATED)
# The happy path, in order: a reader must never see a grant go back along it.
PATH = HAPPY_PATH


# -------------------------------------------------------------------------- in the children
# Module-level so the fork server (tests/processes.py) can import them.


def _open(cfg: dict[str, Any]) -> tuple[Store, Flow]:
    settings = load_settings(
        store=Path(cfg["store"]), allow_http=True, base_url="http://127.0.0.1:3999", timeout=10.0
    )
    store = Store(Path(cfg["store"]))
    return store, Flow(store, settings)


def _note(report: dict[str, Any], text: str, kind: str) -> None:
    report["kinds"][kind] = report["kinds"].get(kind, 0) + 1
    if len(report["messages"]) < 200 or "lock" in text.lower():
        report["messages"].append(text)


async def _shop(cfg: dict[str, Any], report: dict[str, Any], barrier: Any, urls: Any) -> None:
    store, flow = _open(cfg)
    try:
        async with flow, httpx.AsyncClient(timeout=10.0) as http:
            barrier.wait(WAIT)
            deadline = time.monotonic() + cfg["run"]
            for n in itertools.count():
                if time.monotonic() >= deadline:
                    break
                try:
                    pending = await flow.start_quote(
                        offer_id=f"offer-{n}", buyer_wallet=cfg["buyer"], amount="0.01"
                    )
                except FlowError as exc:
                    _note(report, str(exc), exc.kind)
                    continue
                answer = await http.post(
                    f"{cfg['base']}/_admin/approve", json={"redirect": pending.interact_redirect}
                )
                finish = answer.json()["finish_url"]
                urls.put(finish)
                urls.put(finish)
                report["ops"] += 1
    finally:
        for _ in range(LISTENERS):
            urls.put(None)
        store.close()


async def _listener(cfg: dict[str, Any], report: dict[str, Any], barrier: Any, urls: Any) -> None:
    store, flow = _open(cfg)
    try:
        async with flow:
            barrier.wait(WAIT)
            while True:
                url = await asyncio.to_thread(urls.get, True, WAIT)
                if url is None:
                    return
                try:
                    await flow.finish_url(url)
                except FlowError as exc:
                    _note(report, str(exc), exc.kind)
                report["ops"] += 1
    finally:
        store.close()


async def _replayer(cfg: dict[str, Any], report: dict[str, Any], barrier: Any, urls: Any) -> None:
    from opapprove.approvals.replay import replay_many

    store, flow = _open(cfg)
    try:
        async with flow:
            barrier.wait(WAIT)
            deadline = time.monotonic() + cfg["run"] + 1.0
            while time.monotonic() < deadline:
                rows = store.list_pending(states=PAST_APPROVAL)
                for outcome in await replay_many(flow, rows, concurrency=4):
                    if outcome.outcome == "error":
                        _note(report, outcome.message, outcome.error_kind or "error")
                report["ops"] += len(rows)
                await asyncio.sleep(0.05)
    finally:
        store.close()


async def _reader(cfg: dict[str, Any], report: dict[str, Any], barrier: Any, urls: Any) -> None:
    store, flow = _open(cfg)
    seen: dict[str, tuple[int, int]] = {}  # id -> (version, place on the happy path)
    try:
        async with flow:
            barrier.wait(WAIT)
            deadline = time.monotonic() + cfg["run"] + 1.0
            while time.monotonic() < deadline:
                for pending in store.list_pending():
                    place = PATH.index(pending.state) if pending.state in PATH else len(PATH)
                    before = seen.get(pending.id)
                    if before is not None and (pending.version, place) < before:
                        report["violations"].append(
                            f"{pending.id}: saw version {pending.version} ({pending.state}) "
                            f"after version {before[0]}"
                        )
                    seen[pending.id] = (pending.version, place)
                    moves = [e for e in store.events(pending.id) if e.to_state is not None]
                    if any(b.from_state != a.to_state for a, b in itertools.pairwise(moves)):
                        report["violations"].append(f"{pending.id}: broken trail {moves}")
                    if pending.state == State.PAYMENT_CREATED:
                        try:
                            await flow.refresh(pending.id)
                        except FlowError as exc:
                            _note(report, str(exc), exc.kind)
                    report["ops"] += 1
                await asyncio.sleep(0.02)
    finally:
        store.close()


ROLES = {"shop": _shop, "listener": _listener, "replayer": _replayer, "reader": _reader}


def _worker(role: str, cfg: dict[str, Any], barrier: Any, urls: Any, out: Any) -> None:
    report: dict[str, Any] = {
        "role": f"{role}-{os.getpid()}",
        "ops": 0,
        "kinds": {},
        "messages": [],
        "violations": [],
        "unexpected": [],
    }
    try:
        asyncio.run(ROLES[role](cfg, report, barrier, urls))
    except BaseException as exc:  # everything a user could have seen as a traceback
        report["unexpected"].append(f"{type(exc).__name__}: {exc}")
    out.put(report)


# -------------------------------------------------------------------------- the test


async def _drain(store: Store, flow: Flow, sandbox_state: Any) -> None:
    """What support staff do afterwards: replay whatever a dropped answer left behind."""
    for _ in range(4):
        open_rows = [p for p in store.list_pending() if p.state not in FINAL_STATES]
        if not open_rows:
            return
        for pending in open_rows:
            try:
                if pending.state == State.AWAITING_APPROVAL:
                    await flow.finish_url(sandbox_state.approve(pending.interact_redirect))
                else:
                    await flow.replay(pending.id)
            except FlowError as exc:
                assert exc.kind in EXPECTED_KINDS, str(exc)


@pytest.mark.slow
def test_eight_processes_share_one_store_for_a_sustained_run(
    isolated_env: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    tmp_path = isolated_env
    box = make_sandbox(clock=time.time, sleep=asyncio.sleep)
    store_path = tmp_path / "shared" / "opapprove.db"
    with box.served() as server:
        with Store(store_path) as store:
            box.add_default_seller(store, tmp_path / "seller.pem", base=server.url)
        cfg = {
            "store": str(store_path),
            "base": server.url,
            "buyer": f"{server.url}/buyer",
            "run": RUN_SECONDS,
        }
        roles = ["shop"] + ["listener"] * LISTENERS + ["replayer"] * REPLAYERS
        roles += ["reader"] * READERS
        assert len(roles) == 8
        ctx = worker_context()
        barrier, urls, out = ctx.Barrier(len(roles)), ctx.Queue(), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(r, cfg, barrier, urls, out)) for r in roles]
        buyer_before = box.state.balance("buyer")
        for proc in procs:
            proc.start()
        reports: list[dict[str, Any]] = []
        try:
            # Every second or so a payment's answer is lost after the money moved.
            while len(reports) < len(procs):
                try:
                    reports.append(out.get(timeout=1.0))
                except Exception:  # queue.Empty: nobody finished this second
                    box.state.set_fault("create-outgoing-payment", drop="after_commit", times=1)
                    if not any(p.is_alive() for p in procs) and out.empty():
                        break
        finally:
            box.state.clear_faults()
            for proc in procs:
                proc.join(WAIT)
        assert [p.exitcode for p in procs] == [0] * len(procs)
        assert len(reports) == len(procs)

        settings = load_settings(store=store_path, allow_http=True, timeout=10.0)
        with Store(store_path) as store:

            async def drain() -> None:
                async with Flow(store, settings) as flow:
                    await _drain(store, flow, box.state)

            asyncio.run(drain())
            rows = store.list_pending()
            trails = {p.id: store.events(p.id) for p in rows}
        buyer_after = box.state.balance("buyer")
        payments = payments_by_pending(box.state)
    box.recorder.assert_clean()

    by_role = Counter(r["role"].split("-")[0] for r in reports if r["ops"] > 0)
    assert by_role["shop"] == 1 and by_role["listener"] >= 1 and by_role["reader"] == READERS
    for report in reports:
        assert report["unexpected"] == [], report
        assert report["violations"] == [], report["violations"][:5]
        assert set(report["kinds"]) <= EXPECTED_KINDS, report
    output = capfd.readouterr()
    words = " ".join(m for r in reports for m in r["messages"]) + output.out + output.err
    assert "locked" not in words.lower()

    assert len(rows) >= 5, "the run should have started a fair number of grants"
    assert all(p.state == State.COMPLETED for p in rows), Counter(p.state for p in rows)
    # Money moved once per grant, and nowhere else.
    assert payments == {p.id: 1 for p in rows}
    assert buyer_before - buyer_after == AMOUNT_MINOR * len(rows)
    for pending in rows:
        moves = [e for e in trails[pending.id] if e.to_state is not None]
        assert all(b.from_state == a.to_state for a, b in itertools.pairwise(moves))
        into = Counter(e.to_state for e in moves)
        assert {s: into[s] for s in PATH} == {s: 1 for s in PATH}, (pending.id, into)
