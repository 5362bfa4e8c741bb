"""The request budget's interface, and the per-process budget per Agora account.

Agora allows 10 requests per second. A token bucket with a burst above one breaks that right after
an idle spell (a full bucket plus the refill lands more than the limit in one second); spacing
requests evenly cannot. Every budget (this one, the deployment's in Redis, and its fallback while
Redis is down) implements ``RequestBudget``: a context manager around one request, given the one
``Priority`` the hook decided for it. Two steps:

1. A new poll (``Priority.POLL``) reserves the next free slot, slots ``1.02 / rate`` seconds apart,
   first come first served: concurrent waits are served in turn and none starves. Control calls
   (``acquire``, ``start``, ``stop``, ``update``, ``updateLayout``) and retries (they were already
   served once) are ``Priority.CONTROL``: they skip this step, so that ``start`` follows its
   ``acquire`` within Agora's two seconds however many waits fill the budget.
2. A request then waits for a place in the window, control calls ahead of polls and first come
   first served within each. It occupies its place from the moment it is sent until
   ``WINDOW_SECONDS`` after its answer arrived, and is sent only while fewer than ``rate`` requests
   occupy the window. A request reaches Agora somewhere between those two moments, so however long
   it waits for a connection or a busy event loop, no second at Agora's end can see more than
   ``rate`` requests.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager, contextmanager
from typing import Protocol

WINDOW_SECONDS = 1.02


class Priority(enum.IntEnum):
    """A request's place in the account's budget: decided once, by the hook, for every budget."""

    CONTROL = 0  # control calls and retries: the next free place, ahead of every waiting poll
    POLL = 1  # a new poll: its turn among the polls, first come first served


class RequestBudget(Protocol):
    """What the hooks need of a budget, in-process or in Redis: hold a place for one request."""

    def sending(self, priority: Priority) -> AbstractContextManager[None]:
        """Block until the request may be sent; keep its place until its answer (or failure)."""
        ...

    def asending(self, priority: Priority) -> AbstractAsyncContextManager[None]:
        """As ``sending``, without blocking the event loop."""
        ...


class Ticket:
    """One request's place: waiting for the window, then in it until ``until``."""

    __slots__ = ("number", "priority", "until")

    def __init__(self, priority: Priority = Priority.POLL) -> None:
        self.priority = priority
        self.number = 0  # arrival at the window's queue; 0 until it first asks
        self.until = float("inf")  # in the window while in flight, then WINDOW_SECONDS past its answer

    @property
    def rank_key(self) -> tuple[int, int]:
        return (self.priority, self.number)


class RequestSpacer:
    """Never more than ``max_requests_per_second`` requests in any second, as Agora counts them."""

    def __init__(self, max_requests_per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._next_free = float("-inf")
        self._window: list[Ticket] = []
        self._waiting: list[Ticket] = []  # sorted by rank_key: who gets the next free place
        self._arrivals = itertools.count(1)
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
                held = Ticket(Priority.CONTROL)
                held.until = until
                self._window.append(held)

    def reserve(self) -> float:
        """Reserve a poll's next send slot (step 1); return how many seconds to wait for it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_free)
            self._next_free = slot + self.interval
            return slot - now

    def claim(self, ticket: Ticket) -> tuple[bool, float]:
        """Step 2: (True, 0) once ``ticket`` has its place in the window; else (False, how long to
        wait before asking again). A ticket keeps its place in the queue from its first claim until
        it gets a place or is ``forget``-ed."""
        with self._lock:
            now = self._clock()
            self._window = [held for held in self._window if held.until > now]
            if not ticket.number:
                ticket.number = next(self._arrivals)
                bisect.insort(self._waiting, ticket, key=lambda waiting: waiting.rank_key)
            rank = self._waiting.index(ticket)
            free = self.max_requests_per_second - len(self._window)
            if rank < free:
                self._waiting.remove(ticket)
                self._window.append(ticket)
                return True, 0.0
            # Ask again when the place this ticket needs can free: the (rank - free)-th to free. One in
            # flight, or one that a ticket ahead has yet to take, frees a window after its answer at the
            # soonest, so no sooner than a window from now.
            frees = sorted(held.until for held in self._window)
            needed = rank - free
            if needed < len(frees) and frees[needed] != float("inf"):
                return False, frees[needed] - now
            return False, WINDOW_SECONDS

    def forget(self, ticket: Ticket) -> None:
        """The request no longer waits (cancelled, or it failed): the tickets behind it move up."""
        with self._lock:
            if ticket in self._waiting:
                self._waiting.remove(ticket)

    def release(self, ticket: Ticket) -> None:
        """The answer arrived (or the request failed): the place frees up WINDOW_SECONDS from now."""
        with self._lock:
            ticket.until = self._clock() + WINDOW_SECONDS

    def _delays(self, ticket: Ticket) -> Iterator[float]:
        """The waits before ``ticket`` holds a place: a poll's send slot (step 1), then until a place
        in the window is its own (step 2)."""
        if ticket.priority is Priority.POLL:
            delay = self.reserve()
            if delay > 0:
                yield delay
        granted, delay = self.claim(ticket)
        while not granted:
            yield delay
            granted, delay = self.claim(ticket)

    def _done(self, ticket: Ticket) -> None:
        """Answered, failed, or interrupted while waiting: the place frees, or the tickets behind move up."""
        self.forget(ticket)
        self.release(ticket)

    @contextmanager
    def sending(self, priority: Priority) -> Iterator[None]:
        """Hold a place in the window for one request (blocking)."""
        ticket = Ticket(priority)
        try:
            for delay in self._delays(ticket):
                time.sleep(delay)
            yield
        finally:
            self._done(ticket)

    @asynccontextmanager
    async def asending(self, priority: Priority) -> AsyncIterator[None]:
        """Hold a place in the window for one request, without blocking the event loop; a wait that
        is cancelled while it queues leaves the queue."""
        ticket = Ticket(priority)
        try:
            for delay in self._delays(ticket):
                await asyncio.sleep(delay)
            yield
        finally:
            self._done(ticket)


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


def forget_spacers() -> None:
    """Forget every in-process budget, as a fresh process would start (``testing.reset_process_state``)."""
    with _spacers_lock:
        _spacers.clear()
