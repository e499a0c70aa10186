"""What ``keywatch check`` and ``keywatch status`` show: their JSON documents and tables.

The commands themselves (arguments, exit codes, the error boundary) are in ``cli.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from monitor.clock import span
from monitor.config import Settings
from monitor.errors import StoreError
from monitor.model import KeyState, Snapshot
from monitor.store import Delivery, OutboxStats, Store, open_store, probe_store
from monitor.store.base import LEADER_LEASE, LeaseInfo

# --- check ----------------------------------------------------------------------------------


@dataclass
class TenantCheck:
    """What ``check`` found for one tenant: its keys, or why it could not be read."""

    name: str
    snapshot: Snapshot | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def _key_row(tenant: str, key: KeyState) -> list[str]:
    return [
        tenant,
        key.kid,
        key.state,
        _date(key.current_since),
        _date(key.not_after),
        "ok" if key.thumbprint_ok else "MISMATCH",
    ]


def print_check_table(results: Sequence[TenantCheck], out: TextIO) -> None:
    header = ["TENANT", "KID", "STATE", "CURRENT_SINCE", "CERT_NOT_AFTER", "THUMBPRINT"]
    rows = [header]
    for result in results:
        if result.snapshot is not None:
            keys = sorted(result.snapshot.keys.values(), key=lambda k: (k.state, k.kid))
            rows.extend(_key_row(result.name, key) for key in keys)
    _print_rows(rows, out)
    for result in results:
        if result.error:
            print(f"{result.name}: UNREACHABLE: {result.error}", file=out)
        for problem in result.problems:
            print(f"{result.name}: PROBLEM: {problem}", file=out)


def check_document(results: Sequence[TenantCheck], exit_code: int) -> dict[str, Any]:
    """What ``check --json`` prints."""
    return {
        "exit_code": exit_code,
        "tenants": [
            {
                "name": result.name,
                "reachable": result.error is None,
                "error": result.error,
                "problems": result.problems,
                "keys": [
                    _key_json(result.snapshot.keys[kid]) for kid in sorted(result.snapshot.keys)
                ]
                if result.snapshot
                else [],
            }
            for result in results
        ],
    }


def _keys_json(snapshot: Snapshot | None) -> list[dict[str, object]]:
    return [_key_json(snapshot.keys[kid]) for kid in sorted(snapshot.keys)] if snapshot else []


def _key_json(key: KeyState) -> dict[str, object]:
    return {
        "kid": key.kid,
        "state": key.state,
        "current": key.current,
        "next": key.next,
        "previous": key.previous,
        "revoked": key.revoked,
        "current_since": _date(key.current_since) if key.current_since else None,
        "current_until": _date(key.current_until) if key.current_until else None,
        "revoked_at": _date(key.revoked_at) if key.revoked_at else None,
        "cert_not_after": _date(key.not_after) if key.not_after else None,
        "thumbprint": key.thumbprint,
        "thumbprint_ok": key.thumbprint_ok,
    }


DEAD_SHOWN = 20


def open_state(settings: Settings) -> Store:
    """The configured store; ``StoreError`` when it is missing or cannot be opened."""
    path = settings.sqlite_path
    if path is not None and path != ":memory:" and not Path(path).is_file():
        probe_store(settings.state)  # a directory, say, is worth saying so
        raise StoreError(f"state: no store at {path} yet (the daemon creates it on its first run)")
    return open_store(settings.state)


@dataclass
class StatusReport:
    snapshots: dict[str, Snapshot]
    stats: dict[str, OutboxStats]
    counts: dict[tuple[str, str], int]
    dead: list[Delivery]
    now: datetime
    lease: LeaseInfo | None = None


def read_status(store: Store) -> StatusReport:
    return StatusReport(
        snapshots=store.load_snapshots(),
        stats=store.outbox_stats(),
        counts=store.delivery_counts(),
        dead=store.dead_deliveries(limit=DEAD_SHOWN),
        now=datetime.now(UTC),
        lease=store.lease_info(LEADER_LEASE),
    )


def _age(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def _age_text(seconds: float | None) -> str:
    return "-" if seconds is None else span(seconds, tenths_below=0)


def status_document(settings: Settings, report: StatusReport) -> dict[str, Any]:
    """Everything ``status`` shows; configured tenants and destinations first, then the ones
    only the store still knows (removed from the configuration)."""
    kinds = {d.name: d.kind for d in settings.destinations}
    stored = {destination for destination, _ in report.counts}
    configured_tenants = [t.name for t in settings.tenants]
    tenants = configured_tenants + sorted(report.snapshots.keys() - set(configured_tenants))
    return {
        "tenants": [
            _tenant_status(name, report.snapshots.get(name), configured=name in configured_tenants)
            for name in tenants
        ],
        "destinations": [
            _destination_status(name, kinds.get(name), report)
            for name in [*kinds, *sorted(stored - kinds.keys())]
        ],
        "dead": [_dead_status(delivery) for delivery in report.dead],
        "leader": _leader_status(report.lease, report.now),
    }


def _leader_status(lease: LeaseInfo | None, now: datetime) -> dict[str, Any] | None:
    """The leader lease of replicas; None when none was ever taken (SQLite: one process)."""
    if lease is None:
        return None
    return {
        "holder": lease.holder,
        "token": lease.token,
        "expires_at": _date(lease.expires_at) if lease.holder else None,
        "lapsed": lease.holder is None or lease.expires_at <= now,
    }


def _tenant_status(name: str, snapshot: Snapshot | None, *, configured: bool) -> dict[str, Any]:
    return {
        "name": name,
        "configured": configured,
        "snapshot_at": _date(snapshot.taken_at) if snapshot else None,
        "current_kids": snapshot.current_kids if snapshot else [],
    }


def _destination_status(name: str, kind: str | None, report: StatusReport) -> dict[str, Any]:
    oldest = report.stats.get(name, OutboxStats()).oldest_pending_at
    return {
        "name": name,
        "kind": kind,
        "configured": kind is not None,
        "pending": report.counts.get((name, "pending"), 0),
        "dead": report.counts.get((name, "dead"), 0),
        "delivered": report.counts.get((name, "delivered"), 0),
        "oldest_pending_age_seconds": _age(oldest, report.now),
    }


def _dead_status(delivery: Delivery) -> dict[str, Any]:
    return {
        "event_id": delivery.event.id,
        "destination": delivery.destination,
        "tenant": delivery.event.tenant,
        "event": delivery.event.type.value,
        "detected_at": _date(delivery.event.detected_at),
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
    }


def _print_rows(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip(), file=out)


def print_status(document: dict[str, Any], out: TextIO) -> None:
    tenant_rows = [["TENANT", "SNAPSHOT_AT", "CURRENT_KID"]]
    for tenant in document["tenants"]:
        note = "" if tenant["configured"] else "  (not configured)"
        kids = ",".join(tenant["current_kids"]) or "-"
        tenant_rows.append([tenant["name"], tenant["snapshot_at"] or "never", kids + note])
    _print_rows(tenant_rows, out)
    print(file=out)
    rows = [["DESTINATION", "KIND", "PENDING", "DEAD", "DELIVERED", "OLDEST_PENDING"]]
    for destination in document["destinations"]:
        note = "" if destination["configured"] else "  (not configured: not sent)"
        rows.append(
            [
                destination["name"],
                destination["kind"] or "-",
                str(destination["pending"]),
                str(destination["dead"]),
                str(destination["delivered"]),
                _age_text(destination["oldest_pending_age_seconds"]) + note,
            ]
        )
    if len(rows) > 1:
        _print_rows(rows, out)
    else:
        print("no destinations configured and no deliveries stored", file=out)
    if document["dead"]:
        print(file=out)
        print(
            f"dead deliveries (oldest {DEAD_SHOWN}; `keywatch redeliver` queues them again):",
            file=out,
        )
        dead_rows = [["EVENT_ID", "DESTINATION", "TENANT", "EVENT", "ATTEMPTS", "LAST_ERROR"]]
        for dead in document["dead"]:
            dead_rows.append(
                [
                    dead["event_id"],
                    dead["destination"],
                    dead["tenant"],
                    dead["event"],
                    str(dead["attempts"]),
                    dead["last_error"] or "-",
                ]
            )
        _print_rows(dead_rows, out)
    print(file=out)
    print(_leader_line(document["leader"]), file=out)


def _leader_line(leader: dict[str, Any] | None) -> str:
    if leader is None:
        return "leader lease: none taken (a SQLite store has one process, which always leads)"
    if leader["holder"] is None:
        return f"leader lease: released, nobody leads (token {leader['token']})"
    lapsed = ", LAPSED: nobody leads until a replica takes it" if leader["lapsed"] else ""
    return (
        f"leader lease: held by {leader['holder']} with token {leader['token']}, "
        f"until {leader['expires_at']}{lapsed}"
    )
