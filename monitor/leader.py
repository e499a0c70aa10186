"""The leader lease: with a shared store, exactly one replica polls and sends.

Every replica runs a ``LeaderLease`` on the store's lease row ``leader``. The holder is a random
instance id plus the host name. Each replica calls ``Store.acquire_lease`` every ``ttl / 3``
seconds: the leader to renew its lease, a standby to take it once it has lapsed. A standby
therefore takes over at most ``ttl + ttl / 3`` after the leader's last renewal, and at once
(within one ``ttl / 3``) after a leader released it on a clean shutdown.

The leader must stop before its lease can lapse, or two replicas would send at once. So:

- A renewal that fails (a store error) or is refused (another holder) ends the leadership at
  once.
- A renewal that hangs ends it when the last successful one runs out: this process leads until
  ``started + ttl - margin`` on its monotonic clock, where ``started`` is taken before the
  renewal was sent (so the store's expiry, ``now + ttl``, is never earlier) and
  ``margin = ttl / 6`` absorbs the difference between the replicas' wall clocks.

``leading`` is checked against the clock each time it is read, so it turns False at that
instant even while a renewal hangs; ``changed`` is set whenever it flips (the run loop wakes at
the deadline for that). ``grace()`` says how long work already under way may still finish
while nobody else can hold the lease. Time and sleeping are injected (``Clock``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from typing import Any

from monitor.clock import Clock
from monitor.errors import StoreError
from monitor.store.base import Store

log = logging.getLogger(__name__)

LEASE_NAME = "leader"


def new_holder_id() -> str:
    """This process's holder name: the host name and a random instance id."""
    return f"{socket.gethostname()}/{secrets.token_hex(4)}"


class LeaderLease:
    """Takes and renews one lease row; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        holder: str,
        ttl: float,
        clock: Clock | None = None,
        name: str = LEASE_NAME,
    ) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be > 0")
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self.name = name
        self.renew_every = ttl / 3
        self.margin = ttl / 6
        self.changed = asyncio.Event()
        self._clock = clock or Clock()
        self._holding = False  # the last attempt took or renewed the lease
        self._lead_until = 0.0  # monotonic: stop leading here (ttl - margin after the renewal)
        self._expires_at: float | None = None  # monotonic: the store's expiry of our lease
        self._next_attempt: float | None = None
        self._call: asyncio.Future[bool] | None = None  # the store call in flight
        self._announced = False
        self._failing = False

    # --- state ------------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """This process holds the lease and has time left on it, as of now."""
        return self._holding and self._clock.monotonic() < self._lead_until

    def grace(self) -> float:
        """Seconds of leadership left (0 when the lease was lost to another holder): how long
        work already under way may take while stepping down."""
        return max(0.0, self._lead_until - self._clock.monotonic())

    @property
    def expires_at(self) -> float | None:
        """When, on this process's monotonic clock, the lease as last taken or renewed expires
        in the store; None before the first success."""
        return self._expires_at

    # --- taking and renewing ----------------------------------------------------------------

    async def attempt(self) -> bool:
        """Take or renew the lease once; returns ``leading`` afterwards."""
        started = self._clock.monotonic()
        self._next_attempt = started + self.renew_every
        call = self._call
        if call is None or call.done():
            call = self._call = asyncio.ensure_future(
                asyncio.to_thread(
                    self.store.acquire_lease,
                    self.name,
                    self.holder,
                    now=self._clock.now(),
                    ttl=self.ttl,
                )
            )
        else:
            started = -float("inf")  # an older call still runs: its answer counts for nothing
        await self._answer_or_deadline(call)
        try:
            held = call.result()
        except Exception as exc:  # a store error, or a bug: either way the lease is not held
            self._holding = False
            self._report_failure(exc)
            self._publish("the lease could not be renewed")
            return False
        self._report_recovery()
        if held:
            expires_at = started + self.ttl
            if self._expires_at is None or expires_at > self._expires_at:
                self._expires_at = expires_at
            self._lead_until = expires_at - self.margin
            self._holding = self._clock.monotonic() < self._lead_until
            self._publish("the lease renewal answered too late")
        else:
            self._holding = False
            self._lead_until = min(self._lead_until, self._clock.monotonic())
            self._publish("another replica holds the lease")
        return self.leading

    async def _answer_or_deadline(self, call: asyncio.Future[bool]) -> None:
        """Wait for the store's answer; while leading, wake at the deadline to step down."""
        while not call.done():
            self._publish("the lease renewal did not answer in time")
            if not self.leading:
                await asyncio.wait({call})
                return
            await self._race(call, self._lead_until - self._clock.monotonic())

    async def run(self) -> None:
        """Attempt every ``renew_every`` seconds until cancelled."""
        while True:
            if self._next_attempt is not None:
                await self._sleep_until(self._next_attempt)
            await self.attempt()

    async def _sleep_until(self, moment: float) -> None:
        while (left := moment - self._clock.monotonic()) > 0:
            if self.leading:  # also wake at the deadline, should the loop have been starved
                left = min(left, self._lead_until - self._clock.monotonic())
            await self._clock.sleep(max(left, 0.0))
            self._publish("the lease ran out before it was renewed")

    async def _race(self, call: asyncio.Future[bool], seconds: float) -> None:
        timer: asyncio.Future[None] = asyncio.ensure_future(self._clock.sleep(max(seconds, 0.0)))
        waiters: set[asyncio.Future[Any]] = {call, timer}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()

    async def release(self) -> None:
        """Give the lease up (a clean shutdown), so that a standby takes over at once."""
        self._holding = False
        self._lead_until = min(self._lead_until, self._clock.monotonic())
        if self._announced:
            self._announced = False
            self.changed.set()
            log.info("leader lease released (holder %s)", self.holder)
        if self._call is not None and not self._call.done():
            # A renewal still waiting for the store would otherwise take the lease back.
            await asyncio.wait({self._call}, timeout=self.ttl)
        try:
            await asyncio.to_thread(self.store.release_lease, self.name, self.holder)
        except StoreError as exc:
            log.warning("could not release the leader lease (it lapses after its ttl): %s", exc)

    # --- reporting --------------------------------------------------------------------------

    def _publish(self, reason: str) -> None:
        """Announce a change of ``leading`` (set ``changed``, log it)."""
        leading = self.leading
        if leading == self._announced:
            return
        self._announced = leading
        self.changed.set()
        if leading:
            log.info("leader lease taken (holder %s): this replica polls and sends", self.holder)
        else:
            log.warning("not the leader any more (%s): this replica stands by", reason)

    def _report_failure(self, exc: Exception) -> None:
        if self._failing:
            return
        self._failing = True
        if isinstance(exc, StoreError):
            log.error("leader lease: %s", exc)
        else:
            log.error("leader lease: internal error: %s", type(exc).__name__)

    def _report_recovery(self) -> None:
        if self._failing:
            self._failing = False
            log.info("leader lease: the store answers again")
