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

The lease's token grows whenever its holder changes; ``fence`` is what every write of this
leader carries, and the store refuses a write whose token is not the lease's any more
(``FencedOut``), after which ``fenced_out`` ends the leadership at once: a process frozen past
its lease (SIGSTOP, a paused VM) writes and sends nothing when it wakes up.

``leading`` is checked against the clock each time it is read, so it turns False at that
instant even while a renewal hangs; ``changed`` is set whenever it flips (the run loop wakes at
the deadline for that). ``grace()`` says how long work already under way may still finish
while nobody else can hold the lease. Time and sleeping are injected (``Clock``).

``RoleFollower`` makes the process do what the lease says. The leader polls and sends; a
standby keeps the poll schedule paused and the dispatcher stopped, reloads the shared
snapshots (and outbox gauges) into its metrics every ``refresh_interval`` seconds, and takes
over when the lease lapses. Stepping down pauses the schedule and stops the dispatcher at
once (a request in flight may finish while the lease still covers it), and a poll that finds
its process no longer leading commits nothing. Taking over reloads the shared snapshots first,
so the new leader diffs against what the last one committed. Without a lease (SQLite) the one
process always leads.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from monitor.clock import Clock
from monitor.errors import StoreError
from monitor.metrics import Telemetry
from monitor.model import TenantState
from monitor.notify.base import Notifier
from monitor.notify.dispatcher import RESUME_WAIT, Dispatcher
from monitor.store.base import LEADER_LEASE, Fence, Store

log = logging.getLogger(__name__)

LEASE_NAME = LEADER_LEASE
SHARED_REFRESH_SECONDS = 5.0
"""How often a standby reloads the shared snapshots and outbox gauges into its metrics."""
STEP_DOWN_GRACE_SECONDS = 10.0
"""Longest wait, stepping down, for a request in flight (also bounded by the lease's grace)."""


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
        self._call: asyncio.Future[int | None] | None = None  # the store call in flight
        self.token: int | None = None  # the lease's token, as last taken or renewed
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
    def fence(self) -> Fence | None:
        """What this process's writes carry while it leads: the store refuses them once another
        replica took the lease (a newer token)."""
        return None if self.token is None else Fence(self.name, self.token)

    def fenced_out(self) -> None:
        """A write was refused for a newer token: another replica leads. Stop leading now."""
        self._holding = False
        self._lead_until = min(self._lead_until, self._clock.monotonic())
        self._publish("a newer leader took the lease (a write was fenced out)")

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
            token = call.result()
        except Exception as exc:  # a store error, or a bug: either way the lease is not held
            self._holding = False
            self._report_failure(exc)
            self._publish("the lease could not be renewed")
            return False
        self._report_recovery()
        if token is not None:
            self.token = token
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

    async def _answer_or_deadline(self, call: asyncio.Future[int | None]) -> None:
        """Wait for the store's answer; while leading, wake at the deadline to step down."""
        while not call.done():
            self._publish("the lease renewal did not answer in time")
            if not self.leading:
                await asyncio.wait({call})
                return
            await self._race(call, self._lead_until - self._clock.monotonic())

    async def run(self) -> None:
        """Attempt every ``renew_every`` seconds until cancelled. Cancelled, it still waits
        for a store call in flight (``ttl`` at most): the call's task must not outlive it."""
        try:
            while True:
                if self._next_attempt is not None:
                    await self._sleep_until(self._next_attempt)
                await self.attempt()
        finally:
            await self._settle()

    async def _settle(self) -> None:
        """Wait for a store call still in flight (``ttl`` at most); its answer counts for
        nothing any more."""
        if self._call is not None and not self._call.done():
            await asyncio.wait({self._call}, timeout=self.ttl)

    async def _sleep_until(self, moment: float) -> None:
        while (left := moment - self._clock.monotonic()) > 0:
            if self.leading:  # also wake at the deadline, should the loop have been starved
                left = min(left, self._lead_until - self._clock.monotonic())
            await self._clock.sleep(max(left, 0.0))
            self._publish("the lease ran out before it was renewed")

    async def _race(self, call: asyncio.Future[int | None], seconds: float) -> None:
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
        # A renewal still waiting for the store would otherwise take the lease back.
        await self._settle()
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


class Polling(Protocol):
    """The leader's polling (``monitor.schedule.PollSchedule``)."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    async def finish(self, *, grace: float) -> None: ...


class RoleFollower:
    """Leads or stands by, whichever the lease says; see the module docstring.

    ``start`` takes the first role; ``follow_lease`` and ``follow_shared_state`` are the
    background loops the daemon runs while there is a lease; ``close`` ends the leader's work
    for good."""

    def __init__(
        self,
        *,
        lease: LeaderLease | None,
        store: Store,
        telemetry: Telemetry,
        polling: Polling,
        dispatcher: Dispatcher,
        notifiers: Callable[[], Sequence[Notifier]],
        show_shared: Callable[[Mapping[str, TenantState]], None],
        refresh_interval: float = SHARED_REFRESH_SECONDS,
    ) -> None:
        self.lease = lease
        self._store = store
        self._telemetry = telemetry
        self._polling = polling
        self._dispatcher = dispatcher
        self._notifiers = notifiers
        self._show_shared = show_shared
        self._refresh_interval = refresh_interval
        self._leading = False  # the leader's work (polling, sending) is running
        self._stood_by = False  # has served the shared state as a standby
        self._closing = False
        self._lock = asyncio.Lock()
        self._epoch = 0  # changes with every change of role
        self._shared_failing = False
        if lease is not None:
            telemetry.set_leader(False)  # until the lease is taken

    @property
    def leading(self) -> bool:
        """This process polls and sends now: it leads (without a lease, always) and, with a
        lease, still has time left on it."""
        return self._leading and (self.lease is None or self.lease.leading)

    def standing_by(self) -> bool:
        return self.lease is not None and not self._leading

    def polled_enough(self) -> bool:
        """Ready as the leader: every tenant was polled once, or this process served the shared
        state as a standby before it took over (a takeover keeps it ready)."""
        return self._stood_by or self._telemetry.polled_all()

    def bounded(self, seconds: float) -> float:
        """``seconds``, but no longer than the leadership left (the lease's grace)."""
        if self.lease is None:
            return seconds
        return min(seconds, self.lease.grace())

    async def start(self) -> None:
        """Take the first role (after the lease's first attempt): lead or stand by."""
        await self._apply_role()
        if not self._leading:
            log.info("standing by: another replica holds the leader lease")

    async def follow_lease(self) -> None:
        assert self.lease is not None
        while True:
            await self.lease.changed.wait()
            self.lease.changed.clear()
            await self._apply_role()

    async def follow_shared_state(self) -> None:
        """As a standby, keep the metrics on the shared snapshots and outbox."""
        while True:
            await asyncio.sleep(self._refresh_interval)
            if not self._leading:
                await self._load_shared_state(outbox=True)

    async def close(self, *, grace: float) -> None:
        """Stop the leader's work for good, after a change of role in progress: polls finish
        (``grace`` at most), then a request in flight finishes (its timeout at most) and its
        outcome is committed. Both waits are also bounded by the leadership left."""
        self._closing = True
        async with self._lock:
            await self._polling.finish(grace=self.bounded(grace))
            timeouts = [notifier.config.timeout for notifier in self._notifiers()]
            await self._dispatcher.stop(grace=self.bounded(max(timeouts, default=0.0) + 1.0))
            self._leading = False

    async def _apply_role(self) -> None:
        """Lead or stand by, whichever the lease says (without a lease: lead)."""
        async with self._lock:
            if self._closing:
                return
            wanted = self.lease is None or self.lease.leading
            if wanted and not self._leading:
                await self._lead()
            elif not wanted and self._leading:
                await self._stand_by()
            if not self._leading:
                self._stood_by = True

    async def _lead(self) -> None:
        """Start sending, then polling. Taking over from another replica reloads the shared
        snapshots first: what the last leader committed is the baseline of the next diff."""
        self._epoch += 1
        if self.lease is not None:
            await self._load_shared_state(outbox=False)
            if not self.lease.leading:
                return
        self._leading = True
        self._telemetry.set_leader(True)
        # Before polling: deliveries left pending (by the last run, or the last leader) go
        # out first.
        notifiers = list(self._notifiers())
        await self._dispatcher.start(
            notifiers, resume_wait=self.bounded(RESUME_WAIT), lease=self.lease
        )
        if not self.leading:
            return  # lost meanwhile: the lease has set ``changed``, and _stand_by follows
        self._polling.resume()

    async def _stand_by(self) -> None:
        """Stop polling and sending before the lease can lapse. A poll in flight commits
        nothing (it checks ``leading``); a request in flight may finish within the lease's
        grace, else it is cancelled and the next leader sends it again."""
        self._epoch += 1
        self._leading = False
        self._polling.pause()
        self._telemetry.set_leader(False)
        await self._dispatcher.stop(grace=self.bounded(STEP_DOWN_GRACE_SECONDS))

    async def _load_shared_state(self, *, outbox: bool) -> None:
        """Reload the stored snapshots (and outbox gauges) into the tenants and the metrics.
        Dropped when the role changed meanwhile (a leader's own polls are newer)."""
        epoch = self._epoch
        try:
            stored = await asyncio.to_thread(self._store.load_states)
            stats = await asyncio.to_thread(self._store.outbox_stats) if outbox else None
        except StoreError as exc:
            if not self._shared_failing:
                log.warning("cannot read the shared state: %s", exc)
            self._shared_failing = True
            return
        self._shared_failing = False
        if epoch != self._epoch:
            return
        self._show_shared(stored)
        if stats is not None:
            self._telemetry.set_outbox(stats)
