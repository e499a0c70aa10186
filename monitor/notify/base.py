"""What every destination kind shares: the request it renders, the verdict on the answer, and
delivery over the one shared HTTP client.

A kind (``slack.py``, ``teams.py``, …) subclasses ``Notifier`` and implements ``render``; most
keep the shared ``classify``. The dispatcher calls ``deliver`` and acts on the ``Verdict``:
``DELIVERED`` -> mark done; ``RETRY`` -> back off (at least ``retry_after``); ``DEAD`` -> dead
letter. A verdict's ``detail`` is safe to log: it never contains the URL or a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """One HTTP request to a destination. ``url`` is a secret (it often embeds a token)."""

    url: str = field(repr=False)
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    detail: str
    retry_after: float | None = None
    status: int | None = None


def now_utc_iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
