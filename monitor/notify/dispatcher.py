"""The outbox loop: sends committed deliveries to their destinations, durably and in order.

One asyncio task per destination (named ``notify:<name>``) works through that destination's
queue in the store, oldest event first, one request in flight:

- a delivery is sent when it is due and the destination's token bucket has a token; with a
  leader lease it is first claimed under the lease's token (``Store.claim_delivery``), so a
  leader that lost the lease sends nothing (``FencedOut``: it steps down instead);
- ``DELIVERED`` is marked in its own commit right after the answer, so a crash can repeat only
  the one request whose answer arrived but whose mark did not (at-least-once delivery); a
  mark the store refuses (down, full, read-only) is committed again every ``STORE_RETRY``
  seconds, never replaced by a second send;
- ``RETRY`` sets the next attempt at ``now + max(retry_after, backoff)``; 429 answers are
  retried after their ``Retry-After`` and do not advance the backoff; when the delivery's
  ``max_age`` has passed it becomes dead instead;
- ``DEAD`` (a permanent error) moves it to the dead letters at once; ``keywatch redeliver``
  queues it again.

Order is strict per destination: a delivery waiting for its retry holds back every later
delivery to the same destination (head-of-line blocking). That keeps "rotated" before the
"revoked" it led to, at the price of one failing message delaying the ones behind it.

The task sleeps until the head of its queue is due (at most ``idle_wait`` seconds, so a clock
change or a ``keywatch redeliver`` from another process is noticed) or until ``wake`` says new
deliveries were committed. Time, sleeping and randomness are injected (``Clock``, ``rng``).

Inside: ``Dispatcher`` is the loop (one task per lane, the order, the waits); ``_Lanes`` keeps
the per-destination lanes and their tasks through reloads; ``_Outcomes`` records what an
attempt came to (the mark, the counter, the log line, the next attempt).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from monitor.clock import Clock, span
from monitor.errors import FencedOut, StoreError
from monitor.metrics import Telemetry
from monitor.notify._storethread import StoreThread
from monitor.notify.base import Notifier, Outcome, Verdict
from monitor.notify.pacing import Backoff, TokenBucket
from monitor.store.base import Delivery, Fence, Fencing, Store

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
"""Deliveries read from the store at a time (the head of one destination's queue). Each read
sorts all of the destination's pending deliveries: draining a backlog of 10,000 costs about a
quarter of the query CPU in reads of 1000 that it costs in reads of 200."""
IDLE_WAIT = 5.0
"""Longest sleep between two looks at the store, whatever the queue says."""
RESEND_INTERVAL = 60.0
"""How often ``Notifier.periodic`` runs (Alertmanager re-sends its active alerts)."""
STATS_INTERVAL = 0.25
"""Shortest time between two refreshes of the outbox gauges from the store."""
STORE_RETRY = 1.0
"""Seconds before trying the store again after it failed."""
RESUME_WAIT = 1.0
"""How long ``start`` waits for the deliveries that were due at start to be attempted."""
THROTTLE_FLOOR = 1.0
"""Shortest wait after a 429, whatever its ``Retry-After`` says."""


_LaneLoop = Callable[["_Lane", Sequence["asyncio.Task[None]"]], Coroutine[Any, Any, None]]


@dataclass(eq=False)
class _Lane:
    """The state of one destination's sender task."""

    notifier: Notifier
    bucket: TokenBucket
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    sending: bool = False  # a request is in flight (or its outcome is being committed)
    stopping: bool = False  # finish the attempt in flight, then end the task
    throttled_streak: int = 0  # consecutive 429 answers

    @property
    def name(self) -> str:
        return self.notifier.name


class _Lanes:
    """The destinations' lanes, in configuration order, and the removed ones still finishing a
    request; starts and stops their tasks (``run`` is the loop each task runs)."""

    def __init__(self, *, clock: Clock, run: _LaneLoop) -> None:
        self.live: dict[str, _Lane] = {}
        self.running = False
        self._retired: set[_Lane] = set()  # removed, still finishing a request
        self._clock = clock
        self._run = run

    def configure(self, notifiers: Sequence[Notifier]) -> None:
        """See ``Dispatcher.configure``."""
        wanted = {notifier.name: notifier for notifier in notifiers}
        for name in [name for name in self.live if name not in wanted]:
            self._retire(self.live.pop(name))
        for name, notifier in wanted.items():
            lane = self.live.get(name)
            if lane is None:
                self.live[name] = self._open(notifier)
            else:
                if lane.task is None and self.running:
                    self._start(lane)
                lane.notifier = notifier
                lane.bucket.set_rate(notifier.rate_limit)
                lane.wake.set()
        self.live = {name: self.live[name] for name in wanted}

    async def stop(self, *, grace: float) -> None:
        """End every lane's task: a request in flight may finish (``grace`` at most)."""
        self.running = False
        lanes = [*self.live.values(), *self._retired]
        for lane in lanes:
            self._stop(lane)
        tasks = [lane.task for lane in lanes if lane.task is not None]
        finishing = [lane.task for lane in lanes if lane.task is not None and lane.sending]
        if finishing:
            _, unfinished = await asyncio.wait(finishing, timeout=grace)
            for task in unfinished:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.live.clear()
        self._retired.clear()

    def _open(self, notifier: Notifier) -> _Lane:
        lane = _Lane(
            notifier=notifier,
            bucket=TokenBucket(notifier.rate_limit, clock=self._clock.monotonic),
        )
        if self.running:
            self._start(lane)
        return lane

    def _start(self, lane: _Lane) -> None:
        # A destination removed and added back while its old task finishes a request: the new
        # task waits for it, or both could send the head of the queue.
        retiring = [old.task for old in self._retired if old.name == lane.name and old.task]
        lane.task = _spawn(self._run(lane, retiring), name=f"notify:{lane.name}")

    def _stop(self, lane: _Lane) -> None:
        """End the lane's task: at once when it is waiting, after the attempt (request and
        mark) when one is in flight, so that no answer goes unrecorded."""
        lane.stopping = True
        if lane.task is not None and not lane.sending:
            lane.task.cancel()

    def _retire(self, lane: _Lane) -> None:
        """Stop a removed destination's task; a request in flight still gets its mark."""
        self._stop(lane)
        if lane.task is not None and lane.sending:
            self._retired.add(lane)
            lane.task.add_done_callback(lambda _: self._retired.discard(lane))
        log.info("destination removed: its pending deliveries stay queued", extra=_fields(lane))


class _Outcomes:
    """Records what one attempt came to: the claim before it (with a lease), the store's mark
    (in its own commit), the counter, the log line; for a retry, when (or whether) to try
    again. Every write carries ``fence``, the leader lease's token (None: no lease)."""

    def __init__(
        self,
        *,
        store: Store,
        store_thread: StoreThread,
        telemetry: Telemetry,
        rng: random.Random,
        backoff: Backoff,
    ) -> None:
        self._store = store
        self._store_thread = store_thread
        self._telemetry = telemetry
        self._rng = rng
        self._backoff = backoff
        self.lease: Fencing | None = None  # the leader lease, if any, as of the start
        self.fence: Fence | None = None

    async def claim(self, lane: _Lane, delivery: Delivery) -> bool:
        """With a lease: whether this leader may send the delivery now (it is still pending
        and no newer leader holds the lease). Without one, always."""
        if self.fence is None:
            return True
        try:
            return await self._store_thread.run(
                self._store.claim_delivery, delivery.event.id, lane.name, fence=self.fence
            )
        except FencedOut as exc:
            self.refused(lane, delivery, exc)
        except StoreError as exc:
            log.error("cannot claim a delivery: %s", exc, extra=_fields(lane, delivery))
        return False

    def refused(self, lane: _Lane, delivery: Delivery, exc: FencedOut) -> None:
        """A newer leader holds the lease: nothing more is sent from here, the process steps
        down (the new leader sends what is left)."""
        log.warning("stepping down: %s", exc, extra=_fields(lane, delivery))
        if self.lease is not None:
            self.lease.fenced_out()

    async def recorded(
        self, lane: _Lane, delivery: Delivery, verdict: Verdict, finished: datetime, tries: int
    ) -> bool:
        """``record``, True when it was committed; a store failure is logged (at the first
        of ``tries``) and answered False. ``FencedOut`` is raised."""
        try:
            await self.record(lane, delivery, verdict, finished)
        except FencedOut:
            raise
        except StoreError as exc:
            level = logging.ERROR if tries == 0 else logging.DEBUG
            log.log(
                level,
                "cannot record the outcome (%s) of a delivery, trying again every %gs: %s",
                verdict.outcome.value,
                STORE_RETRY,
                exc,
                extra=_fields(lane, delivery),
            )
            return False
        if tries:
            log.info("outcome recorded after %d tries", tries + 1, extra=_fields(lane, delivery))
        return True

    async def record(
        self, lane: _Lane, delivery: Delivery, verdict: Verdict, finished: datetime
    ) -> None:
        """Raises ``StoreError`` when the store could not mark it."""
        if verdict.outcome is Outcome.DELIVERED:
            await self._delivered(lane, delivery, verdict, finished)
        elif verdict.outcome is Outcome.RETRY:
            await self._retry(lane, delivery, verdict, finished)
        else:
            await self._dead(lane, delivery, verdict.detail)

    async def _delivered(
        self, lane: _Lane, delivery: Delivery, verdict: Verdict, finished: datetime
    ) -> None:
        event = delivery.event
        await self._store_thread.run(
            self._store.mark_delivered, event.id, lane.name, finished, fence=self.fence
        )
        lane.throttled_streak = 0
        latency = (finished - event.detected_at).total_seconds()
        self._telemetry.record_notification(lane.name, "delivered", latency=latency)
        log.info(
            "notification delivered (%s, attempt %d)",
            verdict.detail,
            delivery.attempts + 1,
            extra=_fields(lane, delivery),
        )

    async def _retry(
        self, lane: _Lane, delivery: Delivery, verdict: Verdict, finished: datetime
    ) -> None:
        throttled = verdict.status == 429
        if throttled:
            lane.throttled_streak += 1
            delay = max(
                THROTTLE_FLOOR,
                verdict.retry_after
                if verdict.retry_after is not None
                else self._backoff.delay(lane.throttled_streak, self._rng),
            )
        else:
            lane.throttled_streak = 0
            backoff = self._backoff.delay(delivery.failures + 1, self._rng)
            delay = max(verdict.retry_after or 0.0, backoff)
        max_age = lane.notifier.config.max_age
        give_up_at = delivery.created_at + timedelta(seconds=max_age)
        if finished >= give_up_at:
            await self._dead(
                lane, delivery, f"gave up after max_age {span(max_age)}: {verdict.detail}"
            )
            return
        retry_at = min(finished + timedelta(seconds=delay), give_up_at)
        await self._store_thread.run(
            self._store.mark_failed,
            delivery.event.id,
            lane.name,
            error=verdict.detail,
            retry_at=retry_at,
            throttled=throttled,
            fence=self.fence,
        )
        self._telemetry.record_notification(lane.name, "retry")
        log.warning(
            "notification not delivered (%s, attempt %d); next attempt in %s",
            verdict.detail,
            delivery.attempts + 1,
            span((retry_at - finished).total_seconds()),
            extra=_fields(lane, delivery),
        )

    async def _dead(self, lane: _Lane, delivery: Delivery, reason: str) -> None:
        await self._store_thread.run(
            self._store.mark_failed,
            delivery.event.id,
            lane.name,
            error=reason,
            retry_at=None,
            fence=self.fence,
        )
        self._telemetry.record_notification(lane.name, "dead")
        log.warning(
            "notification given up (%s, attempt %d); `keywatch redeliver` queues it again",
            reason,
            delivery.attempts + 1,
            extra=_fields(lane, delivery),
        )


class Dispatcher:
    """Sends the outbox of every configured destination; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        http: httpx.AsyncClient,
        telemetry: Telemetry,
        client_of: Callable[[Notifier], httpx.AsyncClient] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        backoff: Backoff | None = None,
        batch_size: int = BATCH_SIZE,
        idle_wait: float = IDLE_WAIT,
        resend_interval: float = RESEND_INTERVAL,
        stats_interval: float = STATS_INTERVAL,
    ) -> None:
        if batch_size < 1 or idle_wait <= 0 or resend_interval <= 0:
            raise ValueError("dispatcher: batch_size >= 1, idle_wait > 0, resend_interval > 0")
        self._store = store
        self._client_of = client_of or (lambda _: http)  # a destination's route: its client
        self._telemetry = telemetry
        self._clock = clock or Clock()
        self._batch_size = batch_size
        self._idle_wait = idle_wait
        self._resend_interval = resend_interval
        self._stats_interval = stats_interval
        self._lanes = _Lanes(clock=self._clock, run=self._run_lane)
        self._helpers: list[asyncio.Task[None]] = []
        self._stats_dirty = asyncio.Event()
        self._store_thread = StoreThread()
        self._outcomes = _Outcomes(
            store=store,
            store_thread=self._store_thread,
            telemetry=telemetry,
            rng=rng or random.Random(),
            backoff=backoff or Backoff(),
        )

    # --- public -------------------------------------------------------------------------------

    @property
    def destinations(self) -> list[str]:
        """The destinations being sent to, in configuration order."""
        return list(self._lanes.live)

    async def start(
        self,
        notifiers: Sequence[Notifier],
        *,
        resume_wait: float = RESUME_WAIT,
        lease: Fencing | None = None,
    ) -> None:
        """Start sending, every write under the fence ``lease`` (the leader's) holds now.
        Returns once each destination has attempted the deliveries that were due (or after
        ``resume_wait`` seconds), so pending deliveries go before the first poll."""
        if self._lanes.running:
            raise RuntimeError("dispatcher already started")
        self._lanes.running = True
        self._outcomes.lease, self._outcomes.fence = lease, lease.fence if lease else None
        self._helpers = [
            _spawn(self._refresh_stats(), name="notify-stats"),
            _spawn(self._run_periodic(), name="notify-periodic"),
        ]
        self.configure(notifiers)
        resumed = [asyncio.ensure_future(lane.resumed.wait()) for lane in self._lanes.live.values()]
        if resumed:
            _, pending = await asyncio.wait(resumed, timeout=resume_wait)
            for waiter in pending:
                waiter.cancel()

    def configure(self, notifiers: Sequence[Notifier]) -> None:
        """Send to exactly these destinations (a reload): new ones get a task, removed ones
        stop (their pending deliveries stay in the store), changed ones use the new settings
        from their next attempt on."""
        self._lanes.configure(notifiers)
        self._telemetry.set_destinations(self._lanes.live)
        self._stats_dirty.set()

    def wake(self, destinations: Iterable[str] | None = None) -> None:
        """New deliveries were committed (for ``destinations``, or for any)."""
        names = self._lanes.live if destinations is None else destinations
        for name in names:
            lane = self._lanes.live.get(name)
            if lane is not None:
                lane.wake.set()
        self._stats_dirty.set()

    async def stop(self, *, grace: float) -> None:
        """Stop every task. A request in flight may finish (``grace`` seconds at most) and its
        outcome is committed; nothing new is sent."""
        for helper in self._helpers:
            helper.cancel()
        await self._lanes.stop(grace=grace)
        await asyncio.gather(*self._helpers, return_exceptions=True)
        self._helpers = []
        await self._store_thread.close()

    # --- one lane -----------------------------------------------------------------------------

    async def _run_lane(self, lane: _Lane, after: Sequence[asyncio.Task[None]] = ()) -> None:
        if after:
            await asyncio.wait(after)
        while not lane.stopping:
            try:
                queue = await self._store_thread.run(
                    self._store.queued_deliveries, lane.name, self._batch_size
                )
            except StoreError as exc:
                log.error("cannot read the outbox: %s", exc, extra=_fields(lane))
                lane.resumed.set()
                await self._pause(lane, STORE_RETRY)
                continue
            if not queue:
                lane.resumed.set()
                await self._pause(lane, self._idle_wait)
                continue
            await self._work_through(lane, queue)
            lane.resumed.set()

    async def _work_through(self, lane: _Lane, queue: Sequence[Delivery]) -> None:
        """Send the due head of the queue in order; return at the first delivery that is not
        due (head-of-line: nothing behind it may overtake it) or that was not delivered."""
        for delivery in queue:
            wait = (delivery.next_attempt_at - self._clock.now()).total_seconds()
            if wait > 0:
                lane.resumed.set()
                await self._pause(lane, min(wait, self._idle_wait))
                return
            await self._take_token(lane)
            # While ``sending``, stopping the lane waits for the attempt instead of cancelling
            # it: the request finishes (bounded by its timeout) and its outcome is committed.
            lane.sending = True
            try:
                verdict = await self._attempt(lane, delivery)
            finally:
                lane.sending = False
            if lane.stopping:
                return
            if verdict is None:  # the store failed
                await self._pause(lane, STORE_RETRY)
                return
            if verdict.outcome is Outcome.RETRY:
                return

    async def _take_token(self, lane: _Lane) -> None:
        while (wait := lane.bucket.wait_time()) > 0:
            await self._clock.sleep(wait)
        lane.bucket.take()

    async def _pause(self, lane: _Lane, seconds: float) -> None:
        """Sleep ``seconds`` or until the lane is woken, whichever comes first."""
        if lane.wake.is_set():
            lane.wake.clear()
            return
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        waker = asyncio.ensure_future(lane.wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, waker):
                waiter.cancel()
            lane.wake.clear()

    # --- one attempt --------------------------------------------------------------------------

    async def _attempt(self, lane: _Lane, delivery: Delivery) -> Verdict | None:
        """Claim, send once and commit the outcome; None when nothing was sent or the outcome
        could not be committed."""
        if not await self._outcomes.claim(lane, delivery):
            return None
        verdict = await self._send(lane.notifier, delivery)
        if verdict.pause_for:
            lane.bucket.pause(verdict.pause_for)
        finished, tries = self._clock.now(), 0
        try:
            # Sent means sent: an outcome the store refused is committed again (the store is
            # down, full or read-only), never sent again, until it works or the lane stops.
            while not await self._outcomes.recorded(lane, delivery, verdict, finished, tries):
                tries += 1
                await self._clock.sleep(STORE_RETRY)
        except FencedOut as exc:
            self._outcomes.refused(lane, delivery, exc)
            return None
        finally:
            self._stats_dirty.set()
        return verdict

    async def _send(self, notifier: Notifier, delivery: Delivery) -> Verdict:
        try:
            return await notifier.deliver(
                self._client_of(notifier), delivery.event, now=self._clock.now()
            )
        except Exception as exc:  # a renderer bug must not stop the destination's queue
            name = type(exc).__name__
            log.error("delivery attempt crashed: %s", name, extra=_fields(notifier, delivery))
            log.debug("delivery attempt crash details", exc_info=True)
            return Verdict(Outcome.RETRY, f"internal error: {name}")

    # --- helper tasks -------------------------------------------------------------------------

    async def _refresh_stats(self) -> None:
        """Keep the outbox gauges current: after any change, at most every stats_interval."""
        while True:
            await self._stats_dirty.wait()
            self._stats_dirty.clear()
            try:
                stats = await self._store_thread.run(self._store.outbox_stats)
            except StoreError as exc:
                log.warning("cannot refresh the outbox metrics: %s", exc)
            else:
                self._telemetry.set_outbox(stats)
            await self._clock.sleep(self._stats_interval)

    async def _run_periodic(self) -> None:
        while True:
            await self._clock.sleep(self._resend_interval)
            for lane in list(self._lanes.live.values()):
                try:  # the notifier logs its own failures
                    await lane.notifier.periodic(self._client_of(lane.notifier), self._clock.now())
                except Exception as exc:  # one destination's hook must not stop the others
                    name = type(exc).__name__
                    log.error("periodic re-send crashed: %s", name, extra=_fields(lane))


def _spawn(coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro, name=name)


def _fields(target: _Lane | Notifier, delivery: Delivery | None = None) -> dict[str, object]:
    fields: dict[str, object] = {"destination": target.name}
    if delivery is not None:
        fields["event_id"] = delivery.event.id
        fields["event"] = delivery.event.type.value
        fields["tenant"] = delivery.event.tenant
    return fields
