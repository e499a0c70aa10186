"""The schema part of ``SQLStore``: migrations, the schema version, the liveness check."""

from __future__ import annotations

from datetime import UTC, datetime

from monitor.errors import StoreError
from monitor.store import migrations
from monitor.store._sqlbase import Session, SQLBase


class SchemaQueries(SQLBase):
    """Brings the schema up to date, once, even with several processes starting together."""

    def migrate(self) -> None:
        current = self.schema_version()
        migrations.check_not_newer(current, self.where)
        for version in range(current + 1, migrations.latest_version() + 1):
            with self._session(f"migration {version}", write=True) as session:
                self._serialise_migrations(session)
                if self._schema_version(session) >= version:
                    continue  # another process applied it while we waited
                for statement in migrations.statements_of(version, self.dialect):
                    session.execute(statement)
                session.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, self._to_db_time(datetime.now(UTC))),
                )

    def schema_version(self) -> int:
        """The number of the last migration applied; 0 for an empty database."""
        with self._session("read the schema version", write=True) as session:
            self._serialise_migrations(session)
            return self._schema_version(session)

    def _schema_version(self, session: Session) -> int:
        session.execute(migrations.render(migrations.SCHEMA_VERSION_TABLE, self.dialect))
        rows = session.query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        return int(rows[0][0])

    def ping(self) -> None:
        with self._session("ping", write=False) as session:
            session.query("SELECT 1")
        failure = self._write_failure
        if failure is not None:  # it reads, but a full disk or a read-only file refuses writes
            raise StoreError(f"{self.where}: the last write failed: {failure}")
