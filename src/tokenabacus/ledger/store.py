"""The ledger's store: one database, and an access object per kind of row.

``Store(url)`` opens (and migrates) the database once; callers reach rows through their kind:
``store.usage`` (usage records), ``store.keys`` (API keys), ``store.quotas`` (limits and
approvals), ``store.org`` (departments, projects, users), ``store.prices`` (price versions, cost
adjustments, hardware costs), ``store.alerts`` (alerts fired and their deliveries),
``store.events`` (admin events), ``store.meta`` (named values). Every kind of row is a ledger
module of its own, added here as one more attribute on the same database; this module imports
nothing above the ledger.
"""

from __future__ import annotations

from sqlalchemy import Engine

from tokenabacus.ledger.admin_events import AdminEvents
from tokenabacus.ledger.alerts import AlertHistory
from tokenabacus.ledger.database import Database
from tokenabacus.ledger.keys import KeyStore
from tokenabacus.ledger.meta import Meta
from tokenabacus.ledger.org import OrgStore
from tokenabacus.ledger.prices import PriceStore
from tokenabacus.ledger.quotas import QuotaStore
from tokenabacus.ledger.usage import UsageRecords


class Store:
    def __init__(self, url: str, create: bool = True) -> None:
        """Open the ledger and bring its schema up to date. With ``create=False`` a SQLite
        ledger that does not exist is an error (database.LedgerMissing), and nothing is created."""
        self.db = Database(url, create=create)
        self.meta = Meta(self.db)
        self.usage = UsageRecords(self.db)
        self.keys = KeyStore(self.db, self.meta)
        self.quotas = QuotaStore(self.db, self.meta)
        self.org = OrgStore(self.db, self.meta)
        self.prices = PriceStore(self.db, self.meta)  # price versions, cost adjustments, hardware costs
        self.alerts = AlertHistory(self.db)
        self.events = AdminEvents(self.db)  # who changed what (quotas and decisions so far)

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for migrations and checks that need the database itself."""
        return self.db.engine

    def close(self) -> None:
        self.db.close()
