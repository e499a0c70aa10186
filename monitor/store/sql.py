"""The ``Store`` contract written once in SQL; ``sqlite.py`` and ``postgres.py`` supply the rest.

A backend provides a ``Session`` (one connection inside a transaction, or in autocommit for a
single read), its timestamp codec, and the translation of its driver's errors. Queries use
``?`` placeholders; the PostgreSQL session rewrites them.

The queries live in one part per concern: ``_schema`` (migrations), ``_polls`` (snapshots,
states, events), ``_reachability`` (runs of failed polls), ``_outbox`` (deliveries),
``_leases`` (the leader lease) and ``_retention`` (pruning), each written against the hooks
of ``_sqlbase.SQLBase``.
"""

from __future__ import annotations

from monitor.store._leases import LeaseQueries
from monitor.store._outbox import OutboxQueries
from monitor.store._polls import PollQueries
from monitor.store._reachability import ReachabilityQueries
from monitor.store._retention import RetentionQueries
from monitor.store._schema import SchemaQueries
from monitor.store._sqlbase import Session

__all__ = ["SQLStore", "Session"]


class SQLStore(
    SchemaQueries, ReachabilityQueries, PollQueries, OutboxQueries, LeaseQueries, RetentionQueries
):
    """Every ``Store`` method, over the hooks a backend implements (see ``SQLBase``)."""
