"""A faithful local Auth0 tenant (many of them) for the demo, the tests and the benchmarks.

    with SimulatorServer(Simulator(tenants=2, key_pool_size=4)) as server:
        base = server.tenant_url("tenant-1")          # http://127.0.0.1:PORT/tenant-1
        tenant = server.simulator.tenant("tenant-1")
        tenant.rotate(); tenant.fail_next(2, status=503)

The HTTP surface (``POST {base}/oauth/token``, ``{base}/api/v2/keys/signing...``,
``{base}/.well-known/jwks.json`` and the unauthenticated ``{base}/__admin/...`` endpoints) is
documented in ``monitor.simulator.app``.
"""

from __future__ import annotations

from monitor.simulator.app import build_app
from monitor.simulator.crypto import KeyPool
from monitor.simulator.faults import MALFORMED_KINDS
from monitor.simulator.ratelimit import PRESETS, BucketSpec, RateLimitPreset
from monitor.simulator.server import SimulatorServer, parse_listen, run_simulator
from monitor.simulator.tenant import (
    ALL_SCOPES,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    NOSCOPE_CLIENT_ID,
    NOSCOPE_CLIENT_SECRET,
    READONLY_CLIENT_ID,
    READONLY_CLIENT_SECRET,
    RevokeNotAllowed,
    SimulatedTenant,
    Simulator,
    SimulatorError,
    UnknownSigningKey,
)

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "MALFORMED_KINDS",
    "NOSCOPE_CLIENT_ID",
    "NOSCOPE_CLIENT_SECRET",
    "PRESETS",
    "READONLY_CLIENT_ID",
    "READONLY_CLIENT_SECRET",
    "BucketSpec",
    "KeyPool",
    "RateLimitPreset",
    "RevokeNotAllowed",
    "SimulatedTenant",
    "Simulator",
    "SimulatorError",
    "SimulatorServer",
    "UnknownSigningKey",
    "build_app",
    "parse_listen",
    "run_simulator",
]
