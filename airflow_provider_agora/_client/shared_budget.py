"""One request budget per Agora account for a whole deployment, kept in Redis.

Agora counts 10 requests per second per account, whatever process sends them: every task process
on every worker, every triggerer, the API server's Test button. With ``redis_conn_id`` on the
``agora`` connection they all draw from one budget in Redis, with the in-process semantics
(``_rate_limit``): never more than ``max_requests_per_second`` requests in any sliding second as
Agora counts them, a request holding its place from its send until ``WINDOW_SECONDS`` after its
answer. Every decision is one call of a Lua script, one script per operation (claim, release,
forget), atomic in Redis and timed by Redis's clock, never a host's. Keys are per account (a hash
of the Customer ID); nothing secret is stored.

Order: the hook's ``Priority``. Control calls (everything but ``query``) and retries go ahead of
polls; among each, first come first served across all processes. Each process lets at most
``_SEATS`` of its polls queue in Redis at once, so every process gets its turn and Redis sees a few
queued requests per process, not one per wait.

Redis trouble never fails a task. When Redis cannot be reached in ``REDIS_TIMEOUT_SECONDS``, or
refuses us (``redis_down_errors``, the same for sync and async requests), requests fall back to an
in-process budget of ``redis_fallback_share`` of the limit, in the same order (a ``start`` still
goes ahead of every poll), with one warning per process and one line when Redis is back
(``RedisOutage``, one state for both paths), and try Redis again every ``_RETRY_REDIS_SECONDS``.
``redis`` is imported only here, and only when a connection has ``redis_conn_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NamedTuple

from airflow_provider_agora._client.budget import WINDOW_SECONDS, Priority, RequestSpacer
from airflow_provider_agora._redis import (
    RedisSettings,
    client_options,
    key_prefix,
    redis_down_errors,
)
from airflow_provider_agora._settings import AgoraSettings

log = logging.getLogger(__name__)

_RETRY_REDIS_SECONDS = 2.0
_SEATS = 2  # polls of one process queued in Redis at once
_ALIVE_MS = 3000  # a queued request that stops asking for this long is dropped (its process died)
_KEY_TTL_MS = 3_600_000  # an idle account's keys vanish after an hour

# One script per operation, each atomic in Redis and timed by Redis's clock (``TIME``). The keys of an
# account, in this order everywhere: window (in-flight and recent requests, score = when the place
# frees), queue (waiting tickets, score = priority * 1e13 + arrival), alive (waiting tickets, score =
# deadline), seq (the arrival counter).

# Ask for a place: queue the ticket (once) and give it a place if it is among the first as many as
# the window has free.
# KEYS[1] window, KEYS[2] queue, KEYS[3] alive, KEYS[4] seq
# ARGV[1] ticket, ARGV[2] priority (0 control, 1 poll), ARGV[3] limit, ARGV[4] lease_ms (how long a
# place is held if its process dies in flight), ARGV[5] hold_ms (how long a place stays taken after
# its answer), ARGV[6] alive_ms, ARGV[7] key_ttl_ms
# Returns {1, 0} when the ticket got a place, {0, ms to wait before asking again} otherwise: until the
# place it needs can free, so that waiting costs a few round trips, not one every few ms.
LUA_CLAIM_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, queue, alive, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ticket, limit, hold, ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', window, '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', alive, '-inf', now)
for _, dead in ipairs(gone) do
  redis.call('ZREM', queue, dead)
  redis.call('ZREM', alive, dead)
end
redis.call('ZADD', alive, now + tonumber(ARGV[6]), ticket)
local rank = redis.call('ZRANK', queue, ticket)
if not rank then
  local number = redis.call('INCR', seq)
  redis.call('ZADD', queue, tonumber(ARGV[2]) * 1e13 + number, ticket)
  rank = redis.call('ZRANK', queue, ticket)
end
local free = limit - redis.call('ZCARD', window)
local result
if rank < free then
  redis.call('ZREM', queue, ticket)
  redis.call('ZREM', alive, ticket)
  redis.call('ZADD', window, now + tonumber(ARGV[4]), ticket)
  result = {1, 0}
else
  -- Ask again when the place this ticket needs can free: the (rank - free)-th place of the window
  -- by the time it frees. A request still in flight holds its place until hold ms after its
  -- answer, so such a place cannot free sooner than that.
  local wait = hold
  local needed = rank - free
  local entry = redis.call('ZRANGE', window, needed, needed, 'WITHSCORES')
  if entry[2] then
    local frees = tonumber(entry[2])
    if frees <= now + hold then wait = math.max(1, frees - now) end
  end
  result = {0, wait}
end
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl) end
return result
"""

# The answer arrived (or the request failed): the ticket's place frees hold_ms from now.
# KEYS[1] window
# ARGV[1] ticket, ARGV[2] hold_ms
# Returns 1 if the ticket held a place, 0 if not (its lease ran out, or Redis lost it).
LUA_RELEASE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  return 1
end
return 0
"""

# The ticket no longer waits (its wait was cancelled): the tickets behind it move up at once.
# KEYS[1] queue, KEYS[2] alive
# ARGV[1] ticket
# Returns 1 if the ticket was queued, 0 if not.
LUA_FORGET_SCRIPT = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""


def _keys(customer_id: str) -> list[str]:
    prefix = key_prefix(customer_id)
    return [f"{prefix}:window", f"{prefix}:queue", f"{prefix}:alive", f"{prefix}:seq"]


class _Scripts(NamedTuple):
    """The three scripts, registered with one client (sync, or async on one event loop)."""

    claim: Any
    release: Any
    forget: Any


def _register(client: Any) -> _Scripts:
    return _Scripts(
        client.register_script(LUA_CLAIM_SCRIPT),
        client.register_script(LUA_RELEASE_SCRIPT),
        client.register_script(LUA_FORGET_SCRIPT),
    )


class RedisOutage:
    """Whether this process reaches the budget in Redis: one state for its sync and async requests,
    so that an outage gives one warning and its end one line, whichever path met them, and both
    paths try Redis again on the same schedule."""

    def __init__(self, redis: RedisSettings, fallback: RequestSpacer) -> None:
        self._redis = redis
        self._fallback = fallback
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic; the last failure while this process uses the fallback

    @property
    def down(self) -> bool:
        return self._since is not None

    def should_try(self) -> bool:
        """Whether a request asks Redis: always while it answers, every ``_RETRY_REDIS_SECONDS`` while not."""
        with self._lock:
            since = self._since
        return since is None or time.monotonic() - since >= _RETRY_REDIS_SECONDS

    def failed(self, error: BaseException) -> None:
        with self._lock:
            first = self._since is None
            self._since = time.monotonic()
        if first:
            # Requests Redis admitted in the last second still count at Agora: wait them out.
            self._fallback.hold_back(WINDOW_SECONDS)
            log.warning(
                "The shared Agora request budget in Redis (connection %r at %s:%s) is not available (%s: %s); "
                "this process now keeps to %d request(s) per second of its own until Redis answers again.",
                self._redis.conn_id,
                self._redis.host,
                self._redis.port,
                type(error).__name__,
                error,
                self._fallback.max_requests_per_second,
            )

    def answered(self) -> None:
        with self._lock:
            was_down = self._since is not None
            self._since = None
        if was_down:
            log.warning(
                "Redis (connection %r) answers again: back to the shared Agora request budget.", self._redis.conn_id
            )


class SharedBudget:
    """The account's budget in Redis for this process, with its in-process fallback: a
    ``RequestBudget``, used like ``RequestSpacer`` (``with budget.sending(priority)`` around one
    request, ``async with budget.asending(priority)`` on an event loop). The fallback is a
    ``RequestSpacer`` given the same priority, so a control call goes ahead of polls while Redis is
    down as it does in Redis."""

    def __init__(self, settings: AgoraSettings) -> None:
        assert settings.redis is not None
        self.redis_settings = settings.redis
        self.max_requests_per_second = settings.max_requests_per_second
        self.keys = _keys(settings.customer_id)
        # A request in flight holds its place at most this long if its process dies before answering.
        self._lease_ms = int((settings.timeout + WINDOW_SECONDS) * 1000) + 1000
        self._hold_ms = int(WINDOW_SECONDS * 1000)
        fallback_rate = max(1, math.floor(settings.max_requests_per_second * settings.redis_fallback_share))
        self.fallback = RequestSpacer(fallback_rate)
        self.outage = RedisOutage(self.redis_settings, self.fallback)
        self._seats = threading.BoundedSemaphore(_SEATS)
        self._async_seats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._async_seats = weakref.WeakKeyDictionary()
        self._scripts: _Scripts | None = None
        self._async_scripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Scripts]
        self._async_scripts = weakref.WeakKeyDictionary()
        #: Redis round trips made for requests (claims, releases, forgets), for the benchmarks.
        self.round_trips = 0

    @property
    def using_fallback(self) -> bool:
        return self.outage.down

    # -- each script's keys and arguments, as its header says ---------------------------------

    def _claim_call(self, ticket: str, priority: Priority) -> tuple[list[str], list[Any]]:
        limits = [self.max_requests_per_second, self._lease_ms, self._hold_ms, _ALIVE_MS, _KEY_TTL_MS]
        return self.keys, [ticket, int(priority), *limits]  # int: redis-py sends an IntEnum's repr

    def _release_call(self, ticket: str) -> tuple[list[str], list[Any]]:
        return [self.keys[0]], [ticket, self._hold_ms]

    def _forget_call(self, ticket: str) -> tuple[list[str], list[Any]]:
        return [self.keys[1], self.keys[2]], [ticket]

    # -- sync ----------------------------------------------------------------------------------

    def _sync_scripts(self) -> _Scripts:
        if self._scripts is None:
            import redis

            self._scripts = _register(redis.Redis(**client_options(self.redis_settings)))
        return self._scripts

    def _claim(self, ticket: str, priority: Priority) -> bool:
        """Wait for a place in Redis; False if Redis failed (the caller falls back)."""
        try:
            while True:
                self.round_trips += 1
                granted, wait_ms = self._sync_scripts().claim(*self._claim_call(ticket, priority))
                if granted:
                    self.outage.answered()
                    return True
                time.sleep(int(wait_ms) / 1000)
        except redis_down_errors() as error:
            self.outage.failed(error)
            return False
        except BaseException:  # interrupted while it waited: leave the queue at once
            with contextlib.suppress(*redis_down_errors()):
                self.round_trips += 1
                self._sync_scripts().forget(*self._forget_call(ticket))
            raise

    def _release(self, ticket: str) -> None:
        try:
            self.round_trips += 1
            self._sync_scripts().release(*self._release_call(ticket))
        except redis_down_errors() as error:
            self.outage.failed(error)

    @contextmanager
    def sending(self, priority: Priority) -> Iterator[None]:
        """Hold a place in the account's budget for one request (blocking)."""
        if self.outage.should_try():
            ticket = uuid.uuid4().hex
            with self._seat(priority):
                granted = self._claim(ticket, priority)
            if granted:
                try:
                    yield
                finally:
                    self._release(ticket)
                return
        with self.fallback.sending(priority):
            yield

    @contextmanager
    def _seat(self, priority: Priority) -> Iterator[None]:
        if priority is Priority.CONTROL:  # control calls and retries never wait behind polls
            yield
            return
        with self._seats:
            yield

    # -- async ---------------------------------------------------------------------------------

    def _loop_scripts(self) -> _Scripts:
        loop = asyncio.get_running_loop()
        scripts = self._async_scripts.get(loop)
        if scripts is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            options = {**client_options(self.redis_settings), "retry": Retry(NoBackoff(), 0)}  # asyncio's own
            scripts = self._async_scripts[loop] = _register(redis.asyncio.Redis(**options))
        return scripts

    async def _aclaim(self, ticket: str, priority: Priority) -> bool:
        """Wait for a place in Redis; False if Redis failed (the caller falls back)."""
        try:
            while True:
                self.round_trips += 1
                granted, wait_ms = await self._loop_scripts().claim(*self._claim_call(ticket, priority))
                if granted:
                    self.outage.answered()
                    return True
                await asyncio.sleep(int(wait_ms) / 1000)
        except redis_down_errors() as error:
            self.outage.failed(error)
            return False
        except BaseException:  # cancelled (the wait was settled otherwise): leave the queue at once
            with contextlib.suppress(*redis_down_errors()):
                self.round_trips += 1
                await asyncio.shield(self._loop_scripts().forget(*self._forget_call(ticket)))
            raise

    async def _arelease(self, ticket: str) -> None:
        try:
            self.round_trips += 1
            await self._loop_scripts().release(*self._release_call(ticket))
        except redis_down_errors() as error:
            self.outage.failed(error)

    @asynccontextmanager
    async def asending(self, priority: Priority) -> AsyncIterator[None]:
        """Hold a place in the account's budget for one request, without blocking the event loop."""
        if self.outage.should_try():
            ticket = uuid.uuid4().hex
            if priority is Priority.CONTROL:  # control calls and retries never wait behind polls
                granted = await self._aclaim(ticket, priority)
            else:
                seats = self._async_seats.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(_SEATS))
                async with seats:
                    granted = await self._aclaim(ticket, priority)
            if granted:
                try:
                    yield
                finally:
                    await self._arelease(ticket)
                return
        async with self.fallback.asending(priority):
            yield

    def close(self) -> None:
        """Close this process's Redis connections (the async ones close with their event loop)."""
        if self._scripts is not None:
            self._scripts.claim.registered_client.close()
            self._scripts = None


_budgets: dict[tuple[str, RedisSettings], SharedBudget] = {}
_budgets_lock = threading.Lock()


def shared_budget_for(settings: AgoraSettings) -> SharedBudget:
    """The one shared budget of this process for an account and a Redis."""
    assert settings.redis is not None
    key = (settings.customer_id, settings.redis)
    with _budgets_lock:
        budget = _budgets.get(key)
        if budget is None or budget.max_requests_per_second != settings.max_requests_per_second:
            budget = _budgets[key] = SharedBudget(settings)
        return budget


def close_shared_budgets() -> None:
    """Forget every shared budget of this process and close its Redis connections."""
    with _budgets_lock:
        budgets = list(_budgets.values())
        _budgets.clear()
    for budget in budgets:
        budget.close()
