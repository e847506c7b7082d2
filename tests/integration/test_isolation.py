"""One API key can never read, cancel or amend another account's orders (404, as if absent)."""

from __future__ import annotations

from tests.integration.helpers import Api, assert_error


def test_other_accounts_order_when_read_canceled_or_amended_answers_404_and_stays(api: Api) -> None:
    api.set_mark("BTC-PERP", "50000")
    _, key_a = api.new_account()
    _, key_b = api.new_account()
    with api.as_key(key_a) as a, api.as_key(key_b) as b:
        mine = a.post(
            "/v1/orders",
            json={
                "symbol": "BTC-PERP",
                "side": "buy",
                "type": "limit",
                "qty": "0.01",
                "price": "35000",
            },
        ).json()
        oid = mine["order_id"]
        missing = assert_error(b.get("/v1/orders/987654321"), 404, "ORDER_NOT_FOUND")
        foreign = assert_error(b.get(f"/v1/orders/{oid}"), 404, "ORDER_NOT_FOUND")
        assert foreign["code"] == missing["code"]
        assert_error(b.delete(f"/v1/orders/{oid}"), 404, "ORDER_NOT_FOUND")
        assert_error(b.patch(f"/v1/orders/{oid}", json={"qty": "0.02"}), 404, "ORDER_NOT_FOUND")
        assert b.get("/v1/orders").json() == []
        assert b.delete("/v1/orders").json() == {"canceled": []}
        after = a.get(f"/v1/orders/{oid}").json()
        assert after == mine
        assert [o["order_id"] for o in a.get("/v1/orders").json()] == [oid]
        a.delete("/v1/orders")


def test_account_routes_when_called_with_a_key_show_only_that_account(api: Api) -> None:
    id_a, key_a = api.new_account("111")
    id_b, key_b = api.new_account("222")
    with api.as_key(key_a) as a, api.as_key(key_b) as b:
        assert (
            a.get("/v1/account").json()["account_id"],
            a.get("/v1/account").json()["wallet_balance"],
        ) == (id_a, "111")
        assert (
            b.get("/v1/account").json()["account_id"],
            b.get("/v1/account").json()["wallet_balance"],
        ) == (id_b, "222")
        # an account key is no admin token
        assert_error(
            a.get(f"/v1/admin/accounts/{id_b}", headers={"X-Admin-Token": key_a}), 403, "FORBIDDEN"
        )
