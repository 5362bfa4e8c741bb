"""The deployment-wide budget's order, against a real ``redis-server``, and its Redis password's masking.

The integration tests check the budget across real processes, but by counts that several orders
pass alike. Here each "process" is a ``SharedBudget`` of its own (its own Redis client and poll
seats, as each task process has), requests are queued in a known order while the window is full,
then one place is freed and passed on: the order in which requests get it is decided by the Lua
script alone, so the test asserts it exactly.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_agora._client import shared_budget as _shared_budget
from airflow_provider_agora._client.budget import Priority
from airflow_provider_agora._client.shared_budget import SharedBudget, _keys
from airflow_provider_agora._settings import AgoraSettings, settings_from_connection, with_redis
from airflow_provider_agora.hooks.agora import AgoraHook
from tests.support import CUSTOMER_ID, CUSTOMER_SECRET, RedisServer, connection_json, redact

LIMIT = 2
REDIS_CONN_ID = "agora_budget_redis"
HOLD_SECONDS = 0.05  # Agora's one-second window, shortened: a freed place passes on in a blink
DEADLINE_SECONDS = 30.0  # only reached when the budget is broken; never a speed assertion


@pytest.fixture
def account(redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch) -> AgoraSettings:
    """An ``agora`` connection with ``redis_conn_id``, read by the hook as a task reads it: an account of
    its own (so its keys are this test's only), ``LIMIT`` requests per second, and a timeout so long
    that no request's place frees by its lease while the test runs. Nor is a queued request dropped
    as dead (its process stopped asking) however long a busy machine stalls its thread."""
    monkeypatch.setattr(_shared_budget, "WINDOW_SECONDS", HOLD_SECONDS)
    monkeypatch.setattr(_shared_budget, "_ALIVE_MS", int(DEADLINE_SECONDS * 1000) * 10)
    conn = json.loads(connection_json("", redis_conn_id=REDIS_CONN_ID, max_requests_per_second=LIMIT, timeout=600))
    conn["login"] = f"budget-order-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", json.dumps(conn))
    monkeypatch.setenv(f"AIRFLOW_CONN_{REDIS_CONN_ID.upper()}", redis_db.connection_uri())
    settings = AgoraHook().settings
    assert settings.redis is not None and settings.max_requests_per_second == LIMIT
    return settings


class Deployment:
    """Task processes sharing one account's budget in Redis, and the order in which their requests
    got a place."""

    def __init__(self, settings: AgoraSettings, redis_db: RedisServer) -> None:
        self.settings = settings
        self.redis: Any = redis_db.client()
        self.window, self.queue = _keys(settings.customer_id)[:2]
        self.processes: dict[str, SharedBudget] = {}
        self.granted: list[str] = []
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.holders: list[ExitStack] = []

    def process(self, name: str) -> SharedBudget:
        if name not in self.processes:
            self.processes[name] = SharedBudget(self.settings)
        return self.processes[name]

    def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until Redis shows ``condition`` (a state the script wrote), with a deadline."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not condition():
            assert time.monotonic() < deadline, f"Redis never showed {what}"
            time.sleep(0.002)  # polling Redis's state, not standing in for it

    def fill_window(self) -> None:
        """``LIMIT`` requests in flight (sent, not answered), as the hook holds them."""
        for _ in range(LIMIT):
            holder = ExitStack()
            holder.enter_context(self.process("holder").sending(Priority.CONTROL))
            self.holders.append(holder)
        assert self.redis.zcard(self.window) == LIMIT

    def ask(self, process: str, label: str, *, control: bool) -> None:
        """One request of ``process``, sent the way the hook sends a poll (``query``) or a control call;
        returns once it waits in Redis's queue, so arrivals are in the order of the calls."""
        budget = self.process(process)
        queued = self.redis.zcard(self.queue)

        def send() -> None:
            try:
                with budget.sending(Priority.CONTROL if control else Priority.POLL):
                    self.granted.append(label)  # the request is sent now; its answer comes at once
            except BaseException as error:  # reported by the test, not lost in a thread
                self.errors.append(error)

        thread = threading.Thread(target=send, name=label, daemon=True)
        thread.start()
        self.threads.append(thread)
        self.until(lambda: self.redis.zcard(self.queue) == queued + 1, f"{label} queued")

    def answer_one(self) -> list[str]:
        """The first request in flight is answered: its place frees one window later and passes from
        request to request. Returns the order in which the queued requests got it."""
        self.holders.pop(0).close()
        deadline = time.monotonic() + DEADLINE_SECONDS
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not self.errors, self.errors
        assert not any(budget.using_fallback for budget in self.processes.values())
        return list(self.granted)

    def close(self) -> None:
        for holder in self.holders:
            holder.close()
        for thread in self.threads:
            thread.join(DEADLINE_SECONDS)
        for budget in self.processes.values():
            budget.close()
        self.redis.close()


@pytest.fixture
def deployment(account: AgoraSettings, redis_db: RedisServer) -> Iterator[Deployment]:
    bench = Deployment(account, redis_db)
    yield bench
    bench.close()


def test_control_calls_get_the_next_places_ahead_of_polls_that_queued_before_them(deployment: Deployment) -> None:
    """A ``start`` must follow its ``acquire`` within Agora's two seconds however many waits poll:
    when a place frees, every queued control call (any process) goes before any queued poll, and each
    class keeps first come first served."""
    deployment.fill_window()
    deployment.ask("A", "poll 1 (A)", control=False)
    deployment.ask("B", "poll 2 (B)", control=False)
    deployment.ask("A", "poll 3 (A)", control=False)
    deployment.ask("B", "control 1 (B)", control=True)
    deployment.ask("A", "control 2 (A)", control=True)
    deployment.ask("B", "control 3 (B)", control=True)

    assert deployment.answer_one() == [
        "control 1 (B)",
        "control 2 (A)",
        "control 3 (B)",
        "poll 1 (A)",
        "poll 2 (B)",
        "poll 3 (A)",
    ]


def test_polls_from_two_processes_get_places_in_the_order_they_queued(deployment: Deployment) -> None:
    """Waits in different task processes share the account fairly: first come first served across
    processes, so no process's polls overtake another's."""
    deployment.fill_window()
    deployment.ask("A", "poll 1 (A)", control=False)
    deployment.ask("B", "poll 2 (B)", control=False)
    deployment.ask("B", "poll 3 (B)", control=False)
    deployment.ask("A", "poll 4 (A)", control=False)

    assert deployment.answer_one() == ["poll 1 (A)", "poll 2 (B)", "poll 3 (B)", "poll 4 (A)"]


@dataclass
class BackendConnection:
    """A ``redis`` connection as a secrets backend hands it over, before anything registered its password.

    Airflow 3.3's connection lookup and Airflow 2's ``Connection()`` register a password on their own,
    so a read through the hook cannot show whether the provider does; an ``airflow.sdk.Connection``
    made from a URI does not, and the provider promises to register every secret it reads itself.
    """

    password: str
    host: str = "127.0.0.1"
    port: int = 6379
    login: str | None = None
    schema: str = ""
    extra: str = ""

    @property
    def extra_dejson(self) -> dict[str, Any]:
        return json.loads(self.extra) if self.extra else {}


def test_the_provider_itself_registers_the_redis_password_so_log_lines_with_it_are_redacted() -> None:
    """Whatever gave the provider the Redis connection, a log line with its password shows ``***``."""
    password = f"redis-pw-{uuid.uuid4().hex[:16]}"
    settings = settings_from_connection(
        "agora_default",
        host="",
        login=CUSTOMER_ID,
        password=CUSTOMER_SECRET,
        port=None,
        extra={"redis_conn_id": REDIS_CONN_ID},
    )

    with_redis(settings, BackendConnection(password=password))

    assert redact(f"AUTH {password} refused") == "AUTH *** refused"
