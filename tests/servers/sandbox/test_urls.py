from __future__ import annotations

from opapprove.servers.sandbox.urls import account_of, resource_id, set_query_params


def test_set_query_params_keeps_the_query_like_url_search_params() -> None:
    assert set_query_params("http://a.test/f?pendingId=42", {"result": "grant_rejected"}) == (
        "http://a.test/f?pendingId=42&result=grant_rejected"
    )
    assert set_query_params("http://a.test/f?x=1&result=old&result=older", {"result": "new"}) == (
        "http://a.test/f?x=1&result=new"
    )
    # Form encoding as WHATWG serialises it: space is +, ~ is escaped, * is not.
    assert set_query_params(
        "http://a.test/f", {"message": "interaction expired", "h": "a+/=~*"}
    ) == ("http://a.test/f?message=interaction+expired&h=a%2B%2F%3D%7E*")


def test_ids_come_only_from_this_sandbox() -> None:
    base = "http://s.test"
    assert resource_id(base, "quotes", "http://s.test/op/quotes/abc") == "abc"
    assert resource_id(base, "quotes", "http://other.test/op/quotes/abc") is None
    assert resource_id(base, "quotes", "http://s.test/op/quotes/abc/x") is None
    assert account_of(base, "http://s.test/buyer") == "buyer"
    assert account_of(base, "http://s.test/buyer/jwks.json") is None
