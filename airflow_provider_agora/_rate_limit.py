"""A per-process request budget per Agora account, shared by every hook and trigger.

Agora allows 10 requests per second. A token bucket with a burst above one breaks that right after
an idle spell (a full bucket plus the refill lands more than the limit in one second); spacing
requests evenly cannot. Two steps:

1. Each caller reserves the next free slot, slots ``1.02 / rate`` seconds apart, first come first
   served: concurrent waiters are served in order and none starves.
2. Right before sending, the caller checks the log of requests actually sent: if ``rate`` went out
   in the last window, it waits for the oldest to leave it. A caller that woke up late from its
   slot (a busy event loop, a descheduled thread) therefore cannot squeeze an extra request into
   Agora's one-second window.

The windows are 2% longer than a second, so that jitter between our clock and the moment a request
reaches Agora cannot put one more request into Agora's window.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 1.02


class RequestSpacer:
    """Never more than ``max_requests_per_second`` sends in any window of ``WINDOW_SECONDS``."""

    def __init__(self, max_requests_per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._next_free = float("-inf")
        self._sent: deque[float] = deque()
        self.max_requests_per_second = max_requests_per_second

    @property
    def interval(self) -> float:
        return WINDOW_SECONDS / self.max_requests_per_second

    def lower_rate(self, max_requests_per_second: int) -> None:
        """Two connections of one account share one budget: the stricter setting wins."""
        with self._lock:
            self.max_requests_per_second = min(self.max_requests_per_second, max_requests_per_second)

    def reserve(self) -> float:
        """Reserve the next send slot; return how many seconds to wait before claiming it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_free)
            self._next_free = slot + self.interval
            return slot - now

    def claim(self) -> float:
        """Record a send now if the window allows it (return 0), else return how long to wait."""
        with self._lock:
            now = self._clock()
            while self._sent and self._sent[0] <= now - WINDOW_SECONDS:
                self._sent.popleft()
            if len(self._sent) < self.max_requests_per_second:
                self._sent.append(now)
                return 0.0
            return self._sent[0] + WINDOW_SECONDS - now

    def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)
        while (delay := self.claim()) > 0:
            time.sleep(delay)

    async def await_slot(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)
        while (delay := self.claim()) > 0:
            await asyncio.sleep(delay)


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
