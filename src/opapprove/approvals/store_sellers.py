"""The sellers in the store: add, get, list, remove."""

from __future__ import annotations

from opapprove.approvals.backend import StoreError, Tx
from opapprove.approvals.records import Seller
from opapprove.approvals.store_base import Repository
from opapprove.approvals.store_rows import _seller_from_row


class SellerRepository(Repository):
    """Sellers (payees) saved with `opapprove seller add`."""

    def add_seller(self, seller: Seller, *, replace: bool = False) -> Seller:
        """Save a seller; an existing id is an error unless ``replace``."""

        def txn(conn: Tx) -> Seller:
            row = (
                seller.id,
                seller.wallet_address_url,
                seller.key_id,
                seller.private_key_path,
                seller.created_at,
            )
            if replace:
                conn.execute(
                    "INSERT INTO sellers (id, wallet_address_url, key_id, private_key_path,"
                    " created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                    " wallet_address_url = excluded.wallet_address_url,"
                    " key_id = excluded.key_id, private_key_path = excluded.private_key_path,"
                    " created_at = excluded.created_at",
                    row,
                )
            else:
                added = conn.execute(
                    "INSERT INTO sellers (id, wallet_address_url, key_id, private_key_path,"
                    " created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    row,
                )
                if added.rowcount == 0:
                    raise StoreError(
                        f"seller {seller.id!r} already exists",
                        "replace it explicitly, or choose another seller id",
                    )
            return seller

        return self._write(txn, "saving a seller")

    def get_seller(self, seller_id: str) -> Seller | None:
        return self._read_one(
            "SELECT * FROM sellers WHERE id = ?", (seller_id,), _seller_from_row, "reading a seller"
        )

    def list_sellers(self) -> list[Seller]:
        return self._read_all(
            "SELECT * FROM sellers ORDER BY id", (), _seller_from_row, "listing sellers"
        )

    def remove_seller(self, seller_id: str) -> bool:
        removed = self._write_one(
            "DELETE FROM sellers WHERE id = ?", (seller_id,), "removing a seller"
        )
        return removed > 0
