"""The endpoint Agora's Notification Center Service posts to: ``POST /agora/ncs/{conn_id}``.

Mounted in Airflow 3's API server by ``airflow_provider_agora.plugins.agora``. It only verifies,
deduplicates and writes, so it answers well within Agora's 10 seconds:

- the raw body, capped at ``MAX_BODY_BYTES`` (413 past that), is checked against the connection's
  ``ncs_secret`` (and ``ncs_previous_secret`` during a rotation) before anything else; a missing or
  wrong signature is 401 and nothing is written;
- an unknown connection, or one without ``ncs_secret``, is 404; one without ``redis_conn_id`` is
  503 (Agora retries) with what to configure;
- another product's notification and Agora's health-check events are 200 and ignored; one whose
  ``notifyMs`` is older than the deduplication window is refused (400), so a captured
  notification cannot be replayed later;
- everything else is normalised and stored once (``_notification_store``); a duplicate is 200.

Plugin routes are not authenticated by Airflow: the HMAC signature is the authentication. The log
names ``noticeId``, ``sid`` and ``eventType``, never a secret or a signature. This module imports
FastAPI: only the plugin imports it, and only in the API server.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_agora._notification_store import DEDUPE_WINDOW_SECONDS, NotificationStore
from airflow_provider_agora._settings import AgoraSettings

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
HEALTH_CHECK_CHANNEL = "test_webhook"  # the channel of Agora Console's "Check" events
_CONFIG_SECONDS = 30.0  # a connection is read again after this long (secrets can rotate)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, str]


@dataclass
class _Receiver:
    """What one ``agora`` connection says about receiving notifications."""

    secrets: tuple[str, ...]
    settings: AgoraSettings | None  # None: no redis_conn_id
    store: NotificationStore | None
    read_at: float


class _Receivers:
    """Connections read at most every ``_CONFIG_SECONDS``, with one Redis client each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_conn_id: dict[str, _Receiver | None] = {}
        self._read_at: dict[str, float] = {}
        self._reading: dict[str, threading.Lock] = {}

    def get(self, conn_id: str) -> _Receiver | None:
        """One reader at a time re-reads a connection; the others keep using what they have. A
        replaced Redis client is not closed while other requests may still use it: its
        connections go when it is garbage-collected."""
        now = time.monotonic()
        with self._lock:
            if conn_id in self._by_conn_id and now - self._read_at[conn_id] < _CONFIG_SECONDS:
                return self._by_conn_id[conn_id]
            reading = self._reading.setdefault(conn_id, threading.Lock())
        with reading:
            with self._lock:
                if conn_id in self._by_conn_id and now - self._read_at[conn_id] < _CONFIG_SECONDS:
                    return self._by_conn_id[conn_id]
            receiver = self._read(conn_id, now)
            with self._lock:
                self._by_conn_id[conn_id], self._read_at[conn_id] = receiver, time.monotonic()
            return receiver

    @staticmethod
    def _read(conn_id: str, now: float) -> _Receiver | None:
        from airflow_provider_agora._compat import AirflowNotFoundException, BaseHook, mask_secret
        from airflow_provider_agora._settings import settings_of, with_redis

        try:
            connection = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException:
            return None
        extra = connection.extra_dejson if connection.extra else {}
        secrets = tuple(str(extra[name]) for name in ("ncs_secret", "ncs_previous_secret") if extra.get(name))
        for secret in secrets:
            mask_secret(secret)
        if not extra.get("ncs_secret"):
            return _Receiver(secrets=(), settings=None, store=None, read_at=now)
        settings = settings_of(conn_id, connection)
        if settings.redis_conn_id is None:
            return _Receiver(secrets=secrets, settings=None, store=None, read_at=now)
        try:
            redis_connection = BaseHook.get_connection(settings.redis_conn_id)
        except AirflowNotFoundException:
            redis_connection = None
        settings = with_redis(settings, redis_connection)
        assert settings.redis is not None
        return _Receiver(
            secrets=secrets,
            settings=settings,
            store=NotificationStore(settings.redis, settings.customer_id),
            read_at=now,
        )


_receivers = _Receivers()


def handle_notification(conn_id: str, raw: bytes, headers: Any) -> _Reply:
    """Everything but reading the body: verify, classify, deduplicate, store. Runs in a thread."""
    from airflow_provider_agora.exceptions import AgoraConfigurationError
    from airflow_provider_agora.notifications import (
        CLOUD_RECORDING_PRODUCT_ID,
        NotificationError,
        describe,
        parse_notification,
        verify_signature,
    )

    try:
        receiver = _receivers.get(conn_id)
    except AgoraConfigurationError as error:
        return _Reply(503, {"status": "error", "message": str(error)})
    if receiver is None:
        return _Reply(404, {"status": "error", "message": f"No Agora connection {conn_id!r}."})
    if not receiver.secrets:
        return _Reply(
            404,
            {
                "status": "error",
                "message": f"Connection {conn_id!r} has no ncs_secret: copy the Secret of Cloud Recording's "
                f"notifications from Agora Console into its extra.",
            },
        )
    if not verify_signature(raw, headers, receiver.secrets):
        log.warning("Refused a notification for connection %r: missing or wrong signature.", conn_id)
        return _Reply(401, {"status": "error", "message": "Missing or wrong Agora-Signature-V2."})
    try:
        notification = parse_notification(raw)
    except NotificationError as error:
        # Signed by Agora but of a shape we do not know (Console's health check, or a new
        # event): answered 200 so that Agora neither retries nor fails the check; not stored.
        log.warning("Ignored a signed notification for connection %r: %s", conn_id, error)
        return _Reply(200, {"status": "ignored", "message": str(error)})
    if notification.product_id != CLOUD_RECORDING_PRODUCT_ID:
        return _Reply(200, {"status": "ignored", "message": "Not a Cloud Recording notification."})
    if notification.cname == HEALTH_CHECK_CHANNEL:
        return _Reply(200, {"status": "ignored", "message": "Health check."})
    age_seconds = time.time() - notification.notify_ms / 1000
    if age_seconds > DEDUPE_WINDOW_SECONDS:
        log.warning("Refused %s: sent %.0f s ago, past the deduplication window.", describe(notification), age_seconds)
        return _Reply(400, {"status": "error", "message": "notifyMs is older than the deduplication window."})
    if receiver.store is None:
        return _Reply(
            503,
            {
                "status": "error",
                "message": f"Connection {conn_id!r} has no redis_conn_id: set it to a Redis connection, where "
                f"notifications are kept for every Airflow process.",
            },
        )
    import redis

    try:
        stored = receiver.store.add(notification)
    except (redis.RedisError, OSError, ValueError) as error:
        log.warning("Could not store %s: Redis %s.", describe(notification), type(error).__name__)
        return _Reply(503, {"status": "error", "message": "Redis is not available; Agora will retry."})
    if stored is None:
        log.info("Duplicate %s: already stored.", describe(notification))
        return _Reply(200, {"status": "duplicate"})
    log.info("Stored %s.", describe(notification))
    return _Reply(200, {"status": "stored"})


def create_app() -> FastAPI:
    """The receiver's FastAPI app (FastAPI is only imported here, in Airflow 3's API server)."""
    app = FastAPI(title="Agora Cloud Recording notifications", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/ncs/{conn_id}")
    async def receive(conn_id: str, request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return JSONResponse({"status": "error", "message": "Body larger than 1 MiB."}, status_code=413)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                return JSONResponse({"status": "error", "message": "Body larger than 1 MiB."}, status_code=413)
        reply = await run_in_threadpool(handle_notification, conn_id, bytes(raw), request.headers)
        return JSONResponse(reply.body, status_code=reply.status)

    return app
