"""Publication truth: does the world see the keys the Management API reports? Pure, no I/O.

``checks``: a published JWKS (or certificate) read into values, and compared with a tenant's
confirmed snapshot as ``Finding``s. ``episodes``: when findings become events (``jwks.mismatch``,
``jwks.consistent``, ``mirror.stale``, ``mirror.synced``), with the confirmation discipline of
``monitor.confirm`` and deterministic ids. The fetching lives in ``monitor.sources.publication``.
"""

from __future__ import annotations

from monitor.publication.checks import (
    Check,
    Finding,
    PublishedKey,
    check_certificate,
    check_jwks,
    check_mirror,
    der_sha1,
    expected_publication,
    parse_jwks,
    pem_sha1,
)
from monitor.publication.episodes import (
    Target,
    TargetKind,
    Watch,
    judge,
    kept,
    resumed,
    target_key,
)

__all__ = [
    "Check",
    "Finding",
    "PublishedKey",
    "Target",
    "TargetKind",
    "Watch",
    "check_certificate",
    "check_jwks",
    "check_mirror",
    "der_sha1",
    "expected_publication",
    "judge",
    "kept",
    "parse_jwks",
    "pem_sha1",
    "resumed",
    "target_key",
]
