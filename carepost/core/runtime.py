"""The long-lived objects of one carepost process: settings, database and keyring."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from carepost.core.config import Settings
from carepost.core.database import Database
from carepost.crypto.keyprovider import load_key_provider
from carepost.crypto.keyring import Keyring, TenantKeys, bind_tenant_keys


@dataclass
class Runtime:
    settings: Settings
    database: Database
    keyring: Keyring

    @contextmanager
    def tenant_session(self, tenant_id: uuid.UUID) -> Iterator[Session]:
        """A unit of work acting for one tenant, with its keys bound for PHI columns."""
        with self.database.session() as session:
            keys = self.keyring.load(session, tenant_id)
            with bind_tenant_keys(keys):
                yield session
                # Encrypt pending writes while the keys are still bound; the commit
                # that follows runs after the binding is gone.
                session.flush()

    @contextmanager
    def bound_session(self, keys: TenantKeys) -> Iterator[Session]:
        """A unit of work for a tenant whose keys the caller already loaded."""
        with self.database.session() as session, bind_tenant_keys(keys):
            yield session
            session.flush()

    def close(self) -> None:
        self.database.dispose()


def build_runtime(settings: Settings) -> Runtime:
    return Runtime(settings, Database(settings), Keyring(load_key_provider(settings)))
