"""The spec-checking middleware itself: it must catch what it is there to catch."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.sandbox_fixtures import SpecRecorder, operation_for

JSON = httpx.Headers({"content-type": "application/json"})
USD = {"value": "100", "assetCode": "USD", "assetScale": 2}
INCOMING = {
    "id": "http://s.test/op/incoming-payments/1",
    "walletAddress": "http://s.test/seller",
    "completed": False,
    "receivedAmount": USD,
    "createdAt": "2026-01-01T00:00:00.000Z",
}


def check(
    method: str, path: str, status: int, body: Any, headers: httpx.Headers = JSON
) -> SpecRecorder:
    recorder = SpecRecorder()
    recorder.check(method, path, status, headers, json.dumps(body).encode())
    return recorder


def test_every_route_maps_to_an_operation_or_a_page() -> None:
    assert operation_for("POST", "/auth") == "post-request"
    assert operation_for("GET", "/op/incoming-payments/abc") == "get-incoming-payment"
    assert operation_for("GET", "/buyer/jwks.json") == "get-wallet-address-keys"
    assert operation_for("POST", "/interact/a/b/accept") == ""
    assert operation_for("PUT", "/op/quotes") is None


def test_a_good_answer_passes() -> None:
    assert check("POST", "/op/incoming-payments/1/complete", 200, INCOMING).failures == []


def test_a_bad_answer_is_caught() -> None:
    quote = {"id": "http://s.test/op/quotes/1", "walletAddress": "http://s.test/buyer"}
    assert check("GET", "/op/quotes/1", 200, quote).failures


def test_fields_the_sdk_refuses_in_list_items_are_caught() -> None:
    body = {
        "pagination": {"hasNextPage": False, "hasPreviousPage": False},
        "result": [INCOMING | {"methods": []}],
    }
    failures = check("GET", "/op/incoming-payments", 200, body).failures
    assert failures and "Node SDK" in failures[0]


def test_unmapped_routes_fail_and_injected_faults_are_skipped() -> None:
    assert check("PUT", "/op/quotes", 200, {}).failures
    fault = httpx.Headers({"content-type": "application/json", "x-sandbox-fault": "status"})
    assert check("POST", "/op/quotes", 503, {"nothing": 1}, fault).failures == []


def test_known_rafiki_deviations_must_still_be_error_bodies() -> None:
    good = check(
        "POST",
        "/op/incoming-payments/1/complete",
        409,
        {"error": {"code": "409", "description": "wrong state"}},
    )
    assert good.failures == [] and sum(good.deviations.values()) == 1
    assert check("POST", "/op/incoming-payments/1/complete", 409, {"oops": True}).failures
    assert check(
        "POST",
        "/op/incoming-payments/1/complete",
        418,
        {"error": {"code": "418", "description": "teapot"}},
    ).failures
