"""A per-process request budget per Agora account, shared by every hook and trigger.

Agora allows 10 requests per second. A token bucket with a burst above one breaks that right after
an idle spell (a full bucket plus the refill lands more than the limit in one second); spacing
requests evenly cannot. Each caller reserves the next free send slot, first come first served, so
concurrent waiters are served in order and none starves.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

# Slots are this much further apart than 1/rate, so that the jitter between our clock and the
# moment a request reaches Agora cannot squeeze an extra request into Agora's one-second window.
_JITTER_MARGIN = 1.02


class RequestSpacer:
    """Hands out send times at least ``1.02 / max_requests_per_second`` seconds apart."""

    def __init__(self, max_requests_per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._next_free = float("-inf")
        self.max_requests_per_second = max_requests_per_second

    @property
    def interval(self) -> float:
        return _JITTER_MARGIN / self.max_requests_per_second

    def lower_rate(self, max_requests_per_second: int) -> None:
        """Two connections of one account share one budget: the stricter setting wins."""
        with self._lock:
            self.max_requests_per_second = min(self.max_requests_per_second, max_requests_per_second)

    def reserve(self) -> float:
        """Reserve the next send slot; return how many seconds to wait before sending."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_free)
            self._next_free = slot + self.interval
            return slot - now

    def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)

    async def await_slot(self) -> None:
        delay = self.reserve()
        if delay > 0:
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
