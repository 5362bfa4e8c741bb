"""One request budget per Agora account for a whole deployment, kept in Redis.

Agora counts 10 requests per second per account, whatever process sends them: every task process
on every worker, every triggerer, the API server's Test button. With ``redis_conn_id`` on the
``agora`` connection they all draw from one budget in Redis, with the in-process semantics
(``_rate_limit``): never more than ``max_requests_per_second`` requests in any sliding second as
Agora counts them, a request holding its place from its send until ``WINDOW_SECONDS`` after its
answer. Every decision is one Lua script, atomic in Redis and timed by Redis's clock, never a
host's. Keys are per account (a hash of the Customer ID); nothing secret is stored.

Order: control calls (everything but ``query``) and retries go ahead of polls; among each, first
come first served across all processes. Each process lets at most ``_SEATS`` of its polls queue in
Redis at once, so every process gets its turn and Redis sees a few queued requests per process,
not one per wait.

Redis trouble never fails a task. When Redis cannot be reached in ``REDIS_TIMEOUT_SECONDS``, or
refuses us, requests fall back to an in-process budget of ``redis_fallback_share`` of the limit,
with one warning per process, and try Redis again every ``_RETRY_REDIS_SECONDS``. ``redis`` is
imported only here, and only when a connection has ``redis_conn_id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from airflow_provider_agora._rate_limit import WINDOW_SECONDS, RequestSpacer
from airflow_provider_agora._settings import AgoraSettings, RedisSettings

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.5  # each budget call; past it, this process falls back
_RETRY_REDIS_SECONDS = 2.0
_SEATS = 2  # polls of one process queued in Redis at once
_ALIVE_MS = 3000  # a queued request that stops asking for this long is dropped (its process died)
_KEY_TTL_MS = 3_600_000  # an idle account's keys vanish after an hour
_PRIORITY_CONTROL = 0
_PRIORITY_POLL = 1

# KEYS: window (in-flight and recent requests, score = when the place frees), queue (waiting
# tickets, score = priority then arrival), alive (waiting tickets, score = deadline), seq.
# ARGV: op, ticket, priority, limit, lease_ms, hold_ms, alive_ms, key_ttl_ms.
# Returns {1, 0} when the ticket got a place, {0, ms to wait before asking again} otherwise: until
# the place it needs can free, so that waiting costs a few round trips, not one every few ms.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, queue, alive, seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, ticket = ARGV[1], ARGV[2]
if op == 'forget' then
  redis.call('ZREM', queue, ticket)
  redis.call('ZREM', alive, ticket)
  return {1, 0}
end
if op == 'release' then
  if redis.call('ZSCORE', window, ticket) then
    redis.call('ZADD', window, now + tonumber(ARGV[6]), ticket)
  end
  return {1, 0}
end
local limit, ttl = tonumber(ARGV[4]), tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', window, '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', alive, '-inf', now)
for _, dead in ipairs(gone) do
  redis.call('ZREM', queue, dead)
  redis.call('ZREM', alive, dead)
end
redis.call('ZADD', alive, now + tonumber(ARGV[7]), ticket)
local rank = redis.call('ZRANK', queue, ticket)
if not rank then
  local number = redis.call('INCR', seq)
  redis.call('ZADD', queue, tonumber(ARGV[3]) * 1e13 + number, ticket)
  rank = redis.call('ZRANK', queue, ticket)
end
local free = limit - redis.call('ZCARD', window)
local result
if rank < free then
  redis.call('ZREM', queue, ticket)
  redis.call('ZREM', alive, ticket)
  redis.call('ZADD', window, now + tonumber(ARGV[5]), ticket)
  result = {1, 0}
else
  -- Ask again when the place this ticket needs can free: the (rank - free)-th place of the window
  -- by the time it frees. A request still in flight holds its place until hold ms after its
  -- answer, so such a place cannot free sooner than that.
  local hold = tonumber(ARGV[6])
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


def key_prefix(customer_id: str) -> str:
    """Per account; a hash, so the Customer ID itself is not in Redis. The braces keep an account's
    keys in one Redis Cluster slot, as one script needs."""
    digest = hashlib.sha256(customer_id.encode()).hexdigest()[:16]
    return f"airflow-provider-agora:{{{digest}}}"


def _keys(customer_id: str) -> list[str]:
    prefix = key_prefix(customer_id)
    return [f"{prefix}:window", f"{prefix}:queue", f"{prefix}:alive", f"{prefix}:seq"]


def client_options(redis: RedisSettings) -> dict[str, Any]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {
        "host": redis.host,
        "port": redis.port,
        "db": redis.db,
        "username": redis.username,
        "password": redis.password,
        "ssl": redis.ssl,
        "socket_timeout": REDIS_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),  # one short try: the fallback is the retry
    }


class SharedBudget:
    """The account's budget in Redis for this process, with its in-process fallback.

    Used like ``RequestSpacer``: ``with budget.sending(queue=..., control=...)`` around one request
    (``async with budget.asending(...)`` on an event loop).
    """

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
        self._down_since: float | None = None  # monotonic; set while this process uses the fallback
        self._state_lock = threading.Lock()
        self._seats = threading.BoundedSemaphore(_SEATS)
        self._async_seats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]
        self._async_seats = weakref.WeakKeyDictionary()
        self._client: Any = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]
        self._async_clients = weakref.WeakKeyDictionary()
        #: Redis round trips made for requests (claims and releases), for the benchmarks.
        self.round_trips = 0

    # -- state ---------------------------------------------------------------------------------

    @property
    def using_fallback(self) -> bool:
        return self._down_since is not None

    def _should_try_redis(self) -> bool:
        with self._state_lock:
            down_since = self._down_since
        return down_since is None or time.monotonic() - down_since >= _RETRY_REDIS_SECONDS

    def _redis_failed(self, error: BaseException) -> None:
        with self._state_lock:
            first = self._down_since is None
            self._down_since = time.monotonic()
        if first:
            # Requests Redis admitted in the last second still count at Agora: wait them out.
            self.fallback.hold_back(WINDOW_SECONDS)
            log.warning(
                "The shared Agora request budget in Redis (connection %r at %s:%s) is not available (%s: %s); "
                "this process now keeps to %d request(s) per second of its own until Redis answers again.",
                self.redis_settings.conn_id,
                self.redis_settings.host,
                self.redis_settings.port,
                type(error).__name__,
                error,
                self.fallback.max_requests_per_second,
            )

    def _redis_answered(self) -> None:
        with self._state_lock:
            was_down = self._down_since is not None
            self._down_since = None
        if was_down:
            log.warning(
                "Redis (connection %r) answers again: back to the shared Agora request budget.",
                self.redis_settings.conn_id,
            )

    def _script_args(self, op: str, ticket: str, priority: int) -> list[Any]:
        return [
            op,
            ticket,
            priority,
            self.max_requests_per_second,
            self._lease_ms,
            self._hold_ms,
            _ALIVE_MS,
            _KEY_TTL_MS,
        ]

    # -- sync ----------------------------------------------------------------------------------

    def _script(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis(**client_options(self.redis_settings)).register_script(_SCRIPT)
        return self._client

    def _call(self, op: str, ticket: str, priority: int) -> tuple[bool, float]:
        self.round_trips += 1
        granted, wait_ms = self._script()(keys=self.keys, args=self._script_args(op, ticket, priority))
        return bool(granted), int(wait_ms) / 1000

    def _claim(self, ticket: str, priority: int) -> bool:
        """Wait for a place in Redis; False if Redis failed (the caller falls back)."""
        import redis

        try:
            while True:
                granted, wait = self._call("claim", ticket, priority)
                if granted:
                    self._redis_answered()
                    return True
                time.sleep(wait)
        except redis.RedisError as error:
            self._redis_failed(error)
            return False

    def _release(self, ticket: str) -> None:
        import redis

        try:
            self._call("release", ticket, _PRIORITY_CONTROL)
        except redis.RedisError as error:
            self._redis_failed(error)

    @contextmanager
    def sending(self, *, queue: bool = True, control: bool = False) -> Iterator[None]:
        """Hold a place in the account's budget for one request (blocking)."""
        if self._should_try_redis():
            ticket = uuid.uuid4().hex
            priority = _PRIORITY_POLL if queue and not control else _PRIORITY_CONTROL
            with self._seat(priority):
                granted = self._claim(ticket, priority)
            if granted:
                try:
                    yield
                finally:
                    self._release(ticket)
                return
        with self.fallback.sending(queue=queue):
            yield

    @contextmanager
    def _seat(self, priority: int) -> Iterator[None]:
        if priority == _PRIORITY_CONTROL:  # control calls and retries never wait behind polls
            yield
            return
        with self._seats:
            yield

    # -- async ---------------------------------------------------------------------------------

    def _async_script(self) -> Any:
        loop = asyncio.get_running_loop()
        script = self._async_clients.get(loop)
        if script is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            options = {**client_options(self.redis_settings), "retry": Retry(NoBackoff(), 0)}  # asyncio's own
            script = redis.asyncio.Redis(**options).register_script(_SCRIPT)
            self._async_clients[loop] = script
        return script

    async def _acall(self, op: str, ticket: str, priority: int) -> tuple[bool, float]:
        self.round_trips += 1
        granted, wait_ms = await self._async_script()(keys=self.keys, args=self._script_args(op, ticket, priority))
        return bool(granted), int(wait_ms) / 1000

    async def _aclaim(self, ticket: str, priority: int) -> bool:
        import redis

        try:
            while True:
                granted, wait = await self._acall("claim", ticket, priority)
                if granted:
                    self._redis_answered()
                    return True
                await asyncio.sleep(wait)
        except (redis.RedisError, OSError) as error:
            self._redis_failed(error)
            return False
        except asyncio.CancelledError:  # the wait was settled otherwise: leave the queue at once
            with contextlib.suppress(redis.RedisError, OSError):
                await asyncio.shield(self._acall("forget", ticket, priority))
            raise

    async def _arelease(self, ticket: str) -> None:
        import redis

        try:
            await self._acall("release", ticket, _PRIORITY_CONTROL)
        except (redis.RedisError, OSError) as error:
            self._redis_failed(error)

    @asynccontextmanager
    async def asending(self, *, queue: bool = True, control: bool = False) -> AsyncIterator[None]:
        """Hold a place in the account's budget for one request, without blocking the event loop."""
        if self._should_try_redis():
            ticket = uuid.uuid4().hex
            priority = _PRIORITY_POLL if queue and not control else _PRIORITY_CONTROL
            seats = self._async_seats.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(_SEATS))
            if priority == _PRIORITY_CONTROL:
                granted = await self._aclaim(ticket, priority)
            else:
                async with seats:
                    granted = await self._aclaim(ticket, priority)
            if granted:
                try:
                    yield
                finally:
                    await self._arelease(ticket)
                return
        async with self.fallback.asending(queue=queue):
            yield

    def close(self) -> None:
        """Close this process's Redis connections (the async ones close with their event loop)."""
        if self._client is not None:
            self._client.registered_client.close()
            self._client = None


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
