"""Numbered schema migrations, shared by the SQLite and PostgreSQL stores.

Migration N is ``MIGRATIONS[N - 1]``: a tuple of statements applied in one transaction and
recorded in ``schema_version``. The SQL is portable except for two column types, written as
``{timestamp}`` (an instant) and ``{json}`` (a JSON document), which each ``Dialect`` fills in.
Append only: never edit, reorder or remove a migration that has been released.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.errors import StoreError


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    timestamp: str  # ISO-8601 UTC text with microseconds sorts like the instant it names
    json: str


SQLITE = Dialect(name="sqlite", timestamp="TEXT", json="TEXT")
POSTGRES = Dialect(name="postgresql", timestamp="TIMESTAMPTZ", json="JSONB")

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL PRIMARY KEY,
    applied_at {timestamp} NOT NULL
)"""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the last snapshot of each tenant, the events, their outbox, and leases
    (
        """
        CREATE TABLE snapshots (
            tenant TEXT NOT NULL PRIMARY KEY,
            taken_at {timestamp} NOT NULL,
            body {json} NOT NULL
        )""",
        """
        CREATE TABLE events (
            id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL,
            type TEXT NOT NULL,
            severity TEXT NOT NULL,
            detected_at {timestamp} NOT NULL,
            body {json} NOT NULL
        )""",
        "CREATE INDEX events_by_time ON events (detected_at, id)",
        "CREATE INDEX events_by_tenant_time ON events (tenant, detected_at, id)",
        """
        CREATE TABLE deliveries (
            event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            destination TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at {timestamp} NOT NULL,
            created_at {timestamp} NOT NULL,
            delivered_at {timestamp},
            last_error TEXT,
            PRIMARY KEY (event_id, destination)
        )""",
        "CREATE INDEX deliveries_due ON deliveries (destination, state, next_attempt_at)",
        """
        CREATE TABLE leases (
            name TEXT NOT NULL PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at {timestamp} NOT NULL
        )""",
    ),
    # 2: the outbox as a queue. ``poll_index`` keeps the order of the events of one poll (the
    # order ``detect.diff`` reports them in: a rotation before the revocation it caused);
    # ``failures`` counts the failed attempts that advance the backoff (429 answers do not);
    # deliveries_by_state serves the queue and the pending/dead summary per destination.
    (
        "ALTER TABLE events ADD COLUMN poll_index INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN failures INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX deliveries_by_state ON deliveries (state, destination, created_at)",
        # replaced by deliveries_by_state: one index less to update at every mark
        "DROP INDEX deliveries_due",
    ),
    # 3: confirmation (monitor.confirm): the current kids last confirmed and the answer
    # awaiting confirmation; NULL for a snapshot believed with nothing pending.
    ("ALTER TABLE snapshots ADD COLUMN confirmation {json}",),
    # 4: reachability (monitor.reachability): a tenant's run of failed polls, kept while it
    # lasts (no row: reachable), so a restart or a new leader continues the count and raises
    # tenant.unreachable and tenant.recovered once per outage.
    (
        """
        CREATE TABLE reachability (
            tenant TEXT NOT NULL PRIMARY KEY,
            body {json} NOT NULL
        )""",
    ),
    # 5: fencing (monitor.leader): the lease's token grows by one whenever its holder changes,
    # and every write of a leader is refused once the token it was made under is not current;
    # ``claimed_token`` is the token of the leader that last set out to send a delivery.
    (
        "ALTER TABLE leases ADD COLUMN token INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE deliveries ADD COLUMN claimed_token INTEGER",
    ),
)


def render(statement: str, dialect: Dialect) -> str:
    return statement.format(timestamp=dialect.timestamp, json=dialect.json)


def latest_version() -> int:
    return len(MIGRATIONS)


def statements_of(version: int, dialect: Dialect) -> list[str]:
    """The SQL of migration ``version`` (1-based) for ``dialect``."""
    return [render(statement, dialect) for statement in MIGRATIONS[version - 1]]


def check_not_newer(current: int, where: str) -> None:
    """Refuse a schema written by a newer keywatch: this one would misread it."""
    if current > latest_version():
        raise StoreError(
            f"{where}: schema version {current} is newer than this keywatch knows "
            f"({latest_version()}); upgrade keywatch"
        )
