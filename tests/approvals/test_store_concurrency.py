"""Many threads and processes on one store file: one transition wins, nobody sees "locked"."""

from __future__ import annotations

import threading
from multiprocessing.synchronize import Barrier as ProcessBarrier
from pathlib import Path
from typing import Any

from opapprove.approvals.records import State
from opapprove.approvals.store import StaleState, Store
from tests.processes import worker_context

WAIT = 60  # seconds; only guards against a hang, never asserted on


def race_transition(store: Store, pending_id: str, barrier: Any) -> str:
    barrier.wait(WAIT)
    try:
        store.transition(
            pending_id,
            State.APPROVED,
            expect=State.AWAITING_APPROVAL,
            interact_ref="ref",
        )
    except StaleState as exc:
        return f"stale:{exc.current}"
    except Exception as exc:
        return f"error:{exc}"
    return "won"


def awaiting_pending(store: Store) -> str:
    pid = store.create_pending(
        seller_id="s", offer_id="o", buyer_wallet="https://ilp.test/b", amount="1"
    ).id
    for to, expect in [
        (State.INCOMING_CREATED, State.STARTED),
        (State.QUOTE_CREATED, State.INCOMING_CREATED),
        (State.AWAITING_APPROVAL, State.QUOTE_CREATED),
    ]:
        store.transition(pid, to, expect=expect)
    return pid


def check_one_winner(results: list[str], store: Store, pending_id: str) -> None:
    assert results.count("won") == 1, results
    assert all(r == "won" or r == "stale:approved" for r in results), results
    approved = [e for e in store.events(pending_id) if e.to_state == "approved"]
    assert len(approved) == 1
    p = store.get_pending(pending_id)
    assert p is not None and p.state == State.APPROVED and p.version == 5


def run_threads(target: Any, args_list: list[tuple[Any, ...]]) -> list[Any]:
    results: list[Any] = [None] * len(args_list)

    def run(i: int, args: tuple[Any, ...]) -> None:
        results[i] = target(*args)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    return results


def test_two_threads_sharing_one_store(store_location: Path | str) -> None:
    with Store(store_location) as store:
        pid = awaiting_pending(store)
        barrier = threading.Barrier(2)
        results = run_threads(race_transition, [(store, pid, barrier)] * 2)
        check_one_winner(results, store, pid)


def test_eight_threads_each_with_its_own_connection(store_location: Path | str) -> None:
    path = store_location
    with Store(path) as store:
        pid = awaiting_pending(store)
    stores = [Store(path) for _ in range(8)]
    try:
        barrier = threading.Barrier(len(stores))
        results = run_threads(race_transition, [(s, pid, barrier) for s in stores])
        check_one_winner(results, stores[0], pid)
    finally:
        for s in stores:
            s.close()


# -- processes ------------------------------------------------------------------------------
# Workers are module-level functions so the fork server (tests/processes.py) can import them.


def _race_in_process(path: str, pending_id: str, barrier: ProcessBarrier, out: Any) -> None:
    with Store(path) as store:
        out.put(race_transition(store, pending_id, barrier))


def _busy_writer(path: str, barrier: ProcessBarrier, out: Any) -> None:
    try:
        barrier.wait(WAIT)
        # Every process opens (and so migrates) the brand-new file at the same moment.
        with Store(path) as store:
            for i in range(5):
                pid = store.create_pending(
                    seller_id="s", offer_id=str(i), buyer_wallet="https://ilp.test/b", amount="1"
                ).id
                store.transition(pid, State.INCOMING_CREATED, expect=State.STARTED)
                store.add_event(pid, "note", {"i": i})
                store.record_error(pid, "transient")
        out.put("ok")
    except Exception as exc:
        out.put(f"error:{type(exc).__name__}:{exc}")


def _run_processes(target: Any, args: tuple[Any, ...], count: int) -> list[str]:
    ctx = worker_context()
    barrier = ctx.Barrier(count)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for _ in range(count)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=WAIT) for _ in procs]
    finally:
        for p in procs:
            p.join(WAIT)
    assert [p.exitcode for p in procs] == [0] * count
    return results


def test_two_processes_race_one_transition(store_location: Path | str) -> None:
    path = store_location
    with Store(path) as store:
        pid = awaiting_pending(store)
    results = _run_processes(_race_in_process, (str(path), pid), 2)
    with Store(path) as store:
        check_one_winner(results, store, pid)


def test_eight_processes_create_and_write_one_new_file(
    tmp_path: Path, store_backend: str, store_location: Path | str
) -> None:
    # On PostgreSQL: eight processes migrating one new schema at once.
    path = tmp_path / "fresh" / "op.db" if store_backend == "sqlite" else store_location
    results = _run_processes(_busy_writer, (str(path),), 8)
    assert results == ["ok"] * 8
    with Store(path) as store:
        rows = store.list_pending()
        assert len(rows) == 40
        assert all(p.state == State.INCOMING_CREATED and p.attempts == 1 for p in rows)
        assert sum(len(store.events(p.id)) for p in rows) == 40 * 4
