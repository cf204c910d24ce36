"""Auth records in the index: whether auth is active and who its admins are, tokens by the hash of
their secret, and each repo's access control list.

The daemon keeps them all in memory too (`pfsfuse.auth`): this layer only stores and loads them,
in a column family of their own, each change one atomic write.
"""

from __future__ import annotations

from collections.abc import Mapping

from msgspec import Struct, msgpack

from pfsfuse.metadata.db import DB

CF = "auth"
_CONFIG = b"config"
_TOKEN = b"token\0"
_ACL = b"acl\0"


class AuthConfig(Struct):
    admins: list[str]


class TokenRecord(Struct, omit_defaults=True):
    subject: str
    expires: float  # seconds since the epoch
    one_time: bool = False  # a one-time password: exchanged once for a token by `login`


class Acl(Struct):
    scopes: dict[str, str]  # subject -> reader, writer or owner


class AuthRecords:
    def __init__(self, db: DB):
        self.db = db
        db.ensure_column_families(CF)

    def load(self) -> tuple[AuthConfig | None, dict[bytes, TokenRecord], dict[str, Acl]]:
        data = self.db.get(CF, _CONFIG)
        config = None if data is None else msgpack.decode(data, type=AuthConfig)
        tokens = {k[len(_TOKEN) :]: msgpack.decode(v, type=TokenRecord) for k, v in self.db.scan(CF, _TOKEN)}
        acls = {k[len(_ACL) :].decode(): msgpack.decode(v, type=Acl) for k, v in self.db.scan(CF, _ACL)}
        return config, tokens, acls

    def write(
        self,
        *,
        config: AuthConfig | None = None,
        tokens: Mapping[bytes, TokenRecord | None] | None = None,
        acls: Mapping[str, Acl | None] | None = None,
    ) -> None:
        """One atomic change: a new config, and tokens and ACLs set (or deleted, for None)."""
        with self.db.lock:
            txn = self.db.txn()
            if config is not None:
                txn.put(CF, _CONFIG, msgpack.encode(config))
            for h, rec in (tokens or {}).items():
                if rec is None:
                    txn.delete(CF, _TOKEN + h)
                else:
                    txn.put(CF, _TOKEN + h, msgpack.encode(rec))
            for repo, acl in (acls or {}).items():
                if acl is None:
                    txn.delete(CF, _ACL + repo.encode())
                else:
                    txn.put(CF, _ACL + repo.encode(), msgpack.encode(acl))
            txn.commit()

    def clear(self) -> None:
        """Forget everything: auth is no longer active."""
        with self.db.lock:
            txn = self.db.txn()
            for key, _ in self.db.scan(CF):
                txn.delete(CF, key)
            txn.commit()
