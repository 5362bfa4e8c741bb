"""A per-process request budget per Agora account, shared by every hook and trigger.

Agora allows 10 requests per second. A token bucket with a burst above one breaks that right after
an idle spell (a full bucket plus the refill lands more than the limit in one second); spacing
requests evenly cannot. Two steps:

1. A new poll (``query``) reserves the next free slot, slots ``1.02 / rate`` seconds apart, first
   come first served: concurrent waits are served in turn and none starves. A retry skips the
   queue (it was already served once), and so do control calls (``acquire``, ``start``, ``stop``,
   ``update``, ``updateLayout``), so that ``start`` follows its ``acquire`` within Agora's two
   seconds however many waits fill the budget; they only respect step 2.
2. A request then occupies the window from the moment it is sent until ``WINDOW_SECONDS`` after
   its answer arrived, and is sent only while fewer than ``rate`` requests occupy it. A request
   reaches Agora somewhere between those two moments, so however long it waits for a connection
   or a busy event loop, no second at Agora's end can see more than ``rate`` requests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

WINDOW_SECONDS = 1.02
# How often a sender re-checks while every place in the window belongs to a request still in flight.
_IN_FLIGHT_RECHECK = 0.01


class _Send:
    __slots__ = ("until",)

    def __init__(self) -> None:
        self.until = float("inf")  # in the window while in flight, then WINDOW_SECONDS past its answer


class RequestSpacer:
    """Never more than ``max_requests_per_second`` requests in any second, as Agora counts them."""

    def __init__(self, max_requests_per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._next_free = float("-inf")
        self._window: list[_Send] = []
        self.max_requests_per_second = max_requests_per_second

    @property
    def interval(self) -> float:
        return WINDOW_SECONDS / self.max_requests_per_second

    def lower_rate(self, max_requests_per_second: int) -> None:
        """Two connections of one account share one budget: the stricter setting wins."""
        with self._lock:
            self.max_requests_per_second = min(self.max_requests_per_second, max_requests_per_second)

    def hold_back(self, seconds: float) -> None:
        """Act as if the window were full for ``seconds``: used when this budget takes over from
        another one whose recent requests it cannot see (the shared budget in Redis)."""
        with self._lock:
            until = self._clock() + seconds
            self._next_free = max(self._next_free, until)
            for _ in range(self.max_requests_per_second):
                send = _Send()
                send.until = until
                self._window.append(send)

    def reserve(self) -> float:
        """Reserve the next send slot; return how many seconds to wait for it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_free)
            self._next_free = slot + self.interval
            return slot - now

    def claim(self) -> tuple[_Send | None, float]:
        """A place in the window (and 0), or None and how long to wait before asking again."""
        with self._lock:
            now = self._clock()
            self._window = [send for send in self._window if send.until > now]
            if len(self._window) < self.max_requests_per_second:
                send = _Send()
                self._window.append(send)
                return send, 0.0
            soonest = min(send.until for send in self._window)
            return None, (soonest - now) if soonest != float("inf") else _IN_FLIGHT_RECHECK

    def release(self, send: _Send) -> None:
        """The answer arrived (or the request failed): the place frees up WINDOW_SECONDS from now."""
        with self._lock:
            send.until = self._clock() + WINDOW_SECONDS

    @contextmanager
    def sending(self, *, queue: bool = True, control: bool = False) -> Iterator[None]:
        """Hold a place in the window for one request (blocking). Control calls and retries
        (``queue=False``) do not queue behind polls: they only wait for a place in the window."""
        delay = self.reserve() if queue and not control else 0.0
        if delay > 0:
            time.sleep(delay)
        send, delay = self.claim()
        while send is None:
            time.sleep(delay)
            send, delay = self.claim()
        try:
            yield
        finally:
            self.release(send)

    @asynccontextmanager
    async def asending(self, *, queue: bool = True, control: bool = False) -> AsyncIterator[None]:
        """Hold a place in the window for one request, without blocking the event loop."""
        delay = self.reserve() if queue and not control else 0.0
        if delay > 0:
            await asyncio.sleep(delay)
        send, delay = self.claim()
        while send is None:
            await asyncio.sleep(delay)
            send, delay = self.claim()
        try:
            yield
        finally:
            self.release(send)


_spacers: dict[str, RequestSpacer] = {}
_spacers_lock = threading.Lock()


def spacer_for(customer_id: str, max_requests_per_second: int) -> RequestSpacer:
    """The one spacer of this process for an Agora account (Customer ID)."""
    with _spacers_lock:
        spacer = _spacers.get(customer_id)
        if spacer is None:
            spacer = _spacers[customer_id] = RequestSpacer(max_requests_per_second)
        else:
            spacer.lower_rate(max_requests_per_second)
        return spacer
