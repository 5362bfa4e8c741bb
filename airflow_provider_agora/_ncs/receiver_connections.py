"""Which ``agora`` connection a notification URL names, found at a bounded cost whatever strangers send.

The receiver's URL carries a connection id chosen by whoever posts, and the signature can only be
checked once the connection's secret is known, so every lookup happens before anything is
authenticated. To keep that cheap:

- an id that breaks Airflow's own rule for connection ids (characters, at most 250 of them) is
  refused before any lookup;
- a connection is found only under its exact id: Airflow's environment-variable backend reads
  ``AIRFLOW_CONN_<ID upper-cased>``, so every case variant of an id would name the same
  connection; such a variable is accepted only under its lower-case id (the spelling Airflow
  documents), and a connection a backend returns under another spelling (a case-insensitive
  database collation) is refused;
- answers are cached for ``REREAD_SECONDS`` (secrets rotate, so connections are read again):
  connections that receive notifications in a cache of at most ``MAX_RECEIVING_CONNECTIONS``,
  ids that are unknown or not set up for notifications in one of at most ``MAX_REFUSED_IDS``;
- ids found in neither cache are looked up at most ``LOOKUP_BURST`` at once and
  ``LOOKUPS_PER_SECOND`` after that, per process; past that a request is refused without a
  lookup (Agora sends again), so a flood of made-up ids costs a fixed number of backend calls
  per second and a fixed amount of memory;
- each Redis connection gets one client and each account and project one store over it, however
  many connections or spellings point at them.

Nothing here decides what a caller is told: ``_receiver`` answers every refusal alike.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache, TTLCache

if TYPE_CHECKING:
    from airflow_provider_agora._ncs.store import NotificationStore
    from airflow_provider_agora._redis import RedisSettings
    from airflow_provider_agora._settings import AgoraSettings

__all__ = ["Found", "Refused", "connection_id_problem", "connections", "forget_connections"]

REREAD_SECONDS = 30.0
MAX_RECEIVING_CONNECTIONS = 256
MAX_REFUSED_IDS = 256
LOOKUP_BURST = 20
LOOKUPS_PER_SECOND = 2.0
_ENV_PREFIX = "AIRFLOW_CONN_"


@dataclass(frozen=True)
class Found:
    """A connection with ``ncs_secret``. ``problem`` says what else it needs (no Redis connection, a
    setting Airflow cannot use); the receiver names it only to callers who signed with ``secrets``."""

    conn_id: str
    secrets: tuple[str, ...] = field(repr=False)
    settings: AgoraSettings | None = None
    problem: str | None = None

    def store(self, namespace: str) -> NotificationStore:
        assert self.settings is not None and self.settings.redis is not None
        return _stores.get(self.settings.redis, self.settings.customer_id, namespace)


@dataclass(frozen=True)
class Refused:
    """Not a connection that receives notifications; ``reason`` is for the server's log only."""

    reason: str
    kind: str  # "invalid", "budget", "spelling", "unknown", "no_secret": one log line per kind and connection
    log_once_per: str  # which connection the log line is about ("": made-up ids, one line for all of them)


def connection_id_problem(conn_id: str) -> str | None:
    """Why ``conn_id`` cannot be an Airflow connection id, or None: Airflow's own rule
    (``sanitize_conn_id``: letters, digits and ``_#!()-.:/\\``, at most 250 characters)."""
    from airflow.models.connection import CONN_ID_MAX_LEN, sanitize_conn_id

    if len(conn_id) > CONN_ID_MAX_LEN:
        return f"a connection id has at most {CONN_ID_MAX_LEN} characters"
    if sanitize_conn_id(conn_id) != conn_id:
        return "a connection id has letters, digits and _#!()-.:/\\ only"
    return None


class _LookupBudget:
    """A token bucket: at most ``burst`` lookups at once, then ``rate`` per second."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst, self.rate = burst, rate
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class _Stores:
    """One Redis client per Redis connection, one store per account and project over it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[RedisSettings, Any] = {}
        self._stores: dict[tuple[RedisSettings, str, str], NotificationStore] = {}

    def get(self, redis: RedisSettings, customer_id: str, namespace: str) -> NotificationStore:
        from airflow_provider_agora._ncs.store import NotificationStore

        key = (redis, customer_id, namespace)
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                client = self._clients.get(redis)
                if client is None:
                    client = self._clients[redis] = NotificationStore.client_for(redis)
                store = self._stores[key] = NotificationStore(redis, customer_id, namespace, client=client)
            return store

    def close(self) -> None:
        """Close every Redis client and forget every store."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
            self._stores.clear()
        for client in clients:
            client.close()


class _Connections:
    """Connections read at most every ``REREAD_SECONDS``, one lookup at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reading = threading.Lock()
        # conn_id -> (what it said, when it was read); kept past REREAD_SECONDS so that a known
        # connection keeps being served while it is read again, and is never charged to the budget.
        self._receiving: LRUCache[str, tuple[Found, float]] = LRUCache(MAX_RECEIVING_CONNECTIONS)
        self._refused: TTLCache[str, Refused] = TTLCache(MAX_REFUSED_IDS, REREAD_SECONDS)
        self._budget = _LookupBudget(LOOKUP_BURST, LOOKUPS_PER_SECOND)
        #: Lookups made (a backend or database read each), for the tests and the benchmark.
        self.lookups = 0

    def get(self, conn_id: str) -> Found | Refused:
        problem = connection_id_problem(conn_id)
        if problem is not None:
            return Refused(f"the URL's connection id is not valid ({problem})", "invalid", "")
        known, refused = self._cached(conn_id)
        if known is not None and time.monotonic() - known[1] < REREAD_SECONDS:
            return known[0]
        if refused is not None:
            return refused
        if known is not None and not self._reading.acquire(blocking=False):
            return known[0]  # another thread is reading it again: go on with what it said
        if known is None:
            self._reading.acquire()  # a burst for one new id costs one read; the others find it cached
        try:
            known, refused = self._cached(conn_id)
            if known is not None and time.monotonic() - known[1] < REREAD_SECONDS:
                return known[0]
            if refused is not None:
                return refused
            if known is None and not self._budget.take():
                return Refused("too many lookups of unknown connection ids; refused without a lookup", "budget", "")
            found = self._read(conn_id)
            with self._lock:
                self._receiving.pop(conn_id, None)
                if isinstance(found, Found):
                    self._receiving[conn_id] = (found, time.monotonic())
                else:
                    self._refused[conn_id] = found
            return found
        finally:
            self._reading.release()

    def _cached(self, conn_id: str) -> tuple[tuple[Found, float] | None, Refused | None]:
        with self._lock:
            return self._receiving.get(conn_id), self._refused.get(conn_id)

    def clear(self) -> None:
        """Forget every connection (tests; a real deployment waits ``REREAD_SECONDS``)."""
        with self._lock:
            self._receiving.clear()
            self._refused.clear()

    def _read(self, conn_id: str) -> Found | Refused:
        from airflow_provider_agora._compat import AirflowNotFoundException, BaseHook, mask_secret
        from airflow_provider_agora._settings import ncs_secrets, settings_of, with_redis
        from airflow_provider_agora.exceptions import AgoraConfigurationError

        if conn_id != conn_id.lower() and _ENV_PREFIX + conn_id.upper() in os.environ:
            return Refused(
                f"the connection is an environment variable {_ENV_PREFIX}{conn_id.upper()}, whose id is "
                f"{conn_id.lower()!r}: use that spelling in Agora Console's notification URL",
                "spelling",
                conn_id.lower(),
            )
        self.lookups += 1
        try:
            connection = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            return Refused("no connection has this id", "unknown", "")
        if getattr(connection, "conn_id", conn_id) != conn_id:
            return Refused(
                f"the connection's id is spelled {connection.conn_id!r}: use exactly that", "spelling", conn_id
            )
        extra = connection.extra_dejson if connection.extra else {}
        secrets = ncs_secrets(extra)
        for secret in secrets:
            mask_secret(secret)
        if not extra.get("ncs_secret"):
            return Refused(
                "the connection has no ncs_secret: copy the Secret of Cloud Recording's notifications from "
                "Agora Console into its extra",
                "no_secret",
                conn_id,
            )
        try:
            settings = settings_of(conn_id, connection)
            if settings.redis_conn_id is None:
                return Found(
                    conn_id,
                    secrets,
                    problem=f"Connection {conn_id!r} has no redis_conn_id: set it to a Redis connection, where "
                    f"notifications are kept for every Airflow process.",
                )
            try:
                redis_connection = BaseHook.get_connection(settings.redis_conn_id)
            except AirflowNotFoundException:
                redis_connection = None
            settings = with_redis(settings, redis_connection)
        except AgoraConfigurationError as error:
            return Found(conn_id, secrets, problem=str(error))
        return Found(conn_id, secrets, settings=settings)


connections = _Connections()
_stores = _Stores()


def forget_connections() -> None:
    """Forget every connection read and every store opened (``testing.reset_process_state``); the
    next notification reads its connection again."""
    connections.clear()
    _stores.close()
