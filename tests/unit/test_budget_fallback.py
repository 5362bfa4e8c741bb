"""The shared budget's fallback while Redis is down: the same order and the same errors as the rest.

While Redis cannot be reached each process keeps to a small in-process share of the limit (1 request
per second at Agora's 10). That is exactly when a queue of polls is long, so a control call that
queued behind them would miss Agora's two seconds between ``acquire`` and ``start``. The order is
asserted exactly, from the simulator's log; timing only decides how long the test takes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_agora._client import budget as _rate_limit
from airflow_provider_agora._client import shared_budget as _shared_budget
from airflow_provider_agora.hooks.agora import AgoraAsyncHook, AgoraHook
from airflow_provider_agora.simulator import AgoraSimulator
from tests.support import FAST_RETRIES, RedisServer, connection_json, free_port

REDIS_CONN_ID = "agora_budget_redis"
POLLS = 5
# Agora's one-second window, shortened so that five polls at the fallback's 1 request per window
# take two seconds, not six. Still far longer than queueing six requests takes.
WINDOW = 0.35
DEADLINE_SECONDS = 30.0  # only reached when the budget is broken; never a speed assertion
DOWN = "is not available"
BACK = "back to the shared Agora request budget"


def _closed_port() -> int:
    """A loopback port nothing listens on: Redis there refuses every connection at once."""
    return free_port()


@pytest.fixture
def fresh_budgets() -> Iterator[None]:
    """No shared budget left over from another test (one may be in its fallback mode)."""
    _shared_budget.close_shared_budgets()
    yield
    _shared_budget.close_shared_budgets()


@pytest.fixture
def redis_down(agora_conn: AgoraSimulator, monkeypatch: pytest.MonkeyPatch, fresh_budgets: None) -> AgoraSimulator:
    """``agora_default`` with ``redis_conn_id`` naming a Redis that refuses connections, the default
    fallback share (0.1 of 10: one request per window per process) and a short window."""
    monkeypatch.setattr(_rate_limit, "WINDOW_SECONDS", WINDOW)
    monkeypatch.setattr(_shared_budget, "WINDOW_SECONDS", WINDOW)
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(agora_conn.url, redis_conn_id=REDIS_CONN_ID))
    monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}", f"redis://127.0.0.1:{_closed_port()}/0")
    return agora_conn


class BudgetWaits:
    """Which threads have waited in the in-process budget: a request whose thread has slept there
    holds its place in the fallback's queue (a poll its reserved slot, any request its wait)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.threads: set[str] = set()

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.threads.add(threading.current_thread().name)
        time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:  # everything else of ``time`` as it is
        return getattr(time, name)

    def until_waiting(self, name: str) -> None:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            with self._lock:
                if name in self.threads:
                    return
            assert time.monotonic() < deadline, f"{name} never waited in the budget"
            time.sleep(0.001)  # polling the budget's state, not standing in for it


def _query_sync(recording: dict[str, str]) -> None:
    AgoraHook(retry_policy=FAST_RETRIES).query(recording["resource_id"], recording["sid"], recording_mode="mix")


def _query_async(recording: dict[str, str]) -> None:
    async def query() -> None:
        try:
            await AgoraAsyncHook(retry_policy=FAST_RETRIES).query(
                recording["resource_id"], recording["sid"], recording_mode="mix"
            )
        finally:
            await AgoraAsyncHook.close_shared_clients()

    asyncio.run(query())


def test_start_waits_behind_no_queued_poll_while_redis_is_down(
    redis_down: AgoraSimulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Five polls queue in the fallback budget, then a ``start`` arrives: it gets the next place, as it
    does in Redis and in the in-process budget, and the polls follow in the order they queued."""
    waits = BudgetWaits()
    monkeypatch.setattr(_rate_limit, "time", waits)
    caplog.set_level(logging.WARNING, logger=_shared_budget.__name__)
    polled = redis_down.create_recordings([time.time() + 3600] * POLLS, hold=3600)
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire("room", 4242)["resourceId"]  # Redis refuses: the fallback takes over
    budget = hook.transport.budget
    assert isinstance(budget, _shared_budget.SharedBudget) and budget.using_fallback
    errors: list[BaseException] = []

    def run(name: str, call: Callable[[], Any]) -> threading.Thread:
        def send() -> None:
            try:
                call()
            except BaseException as error:  # reported by the test, not lost in a thread
                errors.append(error)

        thread = threading.Thread(target=send, name=name, daemon=True)
        thread.start()
        waits.until_waiting(name)  # queued before the next one arrives
        return thread

    threads = [run(recording["sid"], functools.partial(_query_sync, recording)) for recording in polled]
    threads.append(run("start", lambda: hook.start(resource_id, "room", 4242, recording_mode="mix", client_request={})))
    for thread in threads:
        thread.join(DEADLINE_SECONDS)
    assert not errors, errors

    ordered = sorted(redis_down.request_log, key=lambda record: record.time)
    sent = [record.path.rsplit("/", 1)[-1] for record in ordered]
    assert sent == ["acquire", "start"] + ["query"] * POLLS, " ".join(sent)
    queried = [record.path for record in ordered if record.path.endswith("/query")]
    assert [next(path for path in queried if recording["sid"] in path) for recording in polled] == queried
    assert all(record.status == 200 for record in ordered)
    assert sum(DOWN in record.getMessage() for record in caplog.records) == 1


def _redis_errors() -> list[BaseException]:
    import redis

    return [
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        redis.TimeoutError("Timeout reading from socket"),
        redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."),
        ConnectionResetError(104, "Connection reset by peer"),  # an OSError that redis-py did not wrap
        TimeoutError("timed out"),
    ]


@pytest.fixture
def redis_up(
    agora_conn: AgoraSimulator, redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch, fresh_budgets: None
) -> AgoraSimulator:
    """``agora_default`` with ``redis_conn_id`` naming the session's running ``redis-server``."""
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(agora_conn.url, redis_conn_id=REDIS_CONN_ID))
    monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}", redis_db.connection_uri())
    return agora_conn


def _break_redis(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Every budget script call, sync and async, fails with ``error``, as a sick Redis makes it fail."""
    import redis
    import redis.asyncio

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    async def afail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(redis.Redis, "evalsha", fail)
    monkeypatch.setattr(redis.asyncio.Redis, "evalsha", afail)


@pytest.mark.parametrize("error", _redis_errors(), ids=lambda error: f"{type(error).__module__}.{type(error).__name__}")
@pytest.mark.parametrize("path", [_query_sync, _query_async], ids=["sync", "async"])
def test_sync_and_async_requests_fall_back_on_the_same_redis_errors(
    redis_up: AgoraSimulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    path: Callable[[dict[str, str]], None],
    error: BaseException,
) -> None:
    """Whatever Redis's failure looks like to redis-py, the request is sent under the fallback budget
    with one warning, on either path: no task fails because the budget's Redis is sick."""
    _break_redis(monkeypatch, error)
    (recording,) = redis_up.create_recordings([time.time() + 3600], hold=3600)

    with caplog.at_level(logging.WARNING, logger=_shared_budget.__name__):
        path(recording)

    assert [record.path.rsplit("/", 1)[-1] for record in redis_up.request_log] == ["query"]
    warnings = [record.getMessage() for record in caplog.records if DOWN in record.getMessage()]
    assert len(warnings) == 1 and type(error).__name__ in warnings[0], warnings


async def test_sync_and_async_requests_share_one_redis_down_and_back_state(
    redis_up: AgoraSimulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis goes away under a sync request and comes back under an async one of the same process: one
    warning that it is down, one line that it is back, however the requests of the outage were sent."""
    import redis

    (recording,) = redis_up.create_recordings([time.time() + 3600], hold=3600)
    sync_hook, async_hook = AgoraHook(retry_policy=FAST_RETRIES), AgoraAsyncHook(retry_policy=FAST_RETRIES)
    query = (recording["resource_id"], recording["sid"])
    caplog.set_level(logging.INFO, logger=_shared_budget.__name__)
    try:
        await asyncio.to_thread(functools.partial(sync_hook.query, *query, recording_mode="mix"))  # Redis answers
        with monkeypatch.context() as sick:
            _break_redis(sick, redis.ConnectionError("Connection refused"))
            await asyncio.to_thread(functools.partial(sync_hook.query, *query, recording_mode="mix"))  # down: warns
            await async_hook.query(*query, recording_mode="mix")  # still down: falls back without a second warning
            sick.setattr(_shared_budget, "_RETRY_REDIS_SECONDS", 0.0)
            await async_hook.query(
                *query, recording_mode="mix"
            )  # tries Redis again: still down, still no second warning
        monkeypatch.setattr(_shared_budget, "_RETRY_REDIS_SECONDS", 0.0)
        await async_hook.query(*query, recording_mode="mix")  # back
        await asyncio.to_thread(
            functools.partial(sync_hook.query, *query, recording_mode="mix")
        )  # already back: nothing to say
    finally:
        await AgoraAsyncHook.close_shared_clients()

    messages = [record.getMessage() for record in caplog.records]
    assert sum(DOWN in message for message in messages) == 1, messages
    assert sum(BACK in message for message in messages) == 1, messages
    assert len(redis_up.request_log) == 6
    budget = sync_hook.transport.budget
    assert isinstance(budget, _shared_budget.SharedBudget) and not budget.using_fallback
