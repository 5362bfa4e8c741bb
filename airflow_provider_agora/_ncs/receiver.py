"""The endpoint Agora's Notification Center Service posts to: ``POST /agora/ncs/{conn_id}``.

Mounted in Airflow 3's API server by ``airflow_provider_agora.plugins.agora`` when
``[agora] notifications_receiver`` is on. The internet reaches it, and Airflow does not
authenticate plugin routes: the HMAC signature is the authentication, so until a body is verified
the receiver spends little and says nothing.

- The body is read with a deadline (``BODY_READ_SECONDS``, 408) and a cap (``MAX_BODY_BYTES``, 413);
  either way the connection is closed without reading the rest.
- The connection is found at a bounded cost (``_receiver_connections``). An invalid or unknown id,
  a connection without ``ncs_secret`` and a missing or wrong signature all get the same 401 with
  the same body; only the server's log tells them apart, once per connection every
  ``COMPLAINT_SECONDS``.
- After the signature check the caller is Agora (or holds the project's Secret), so what is wrong
  may be named: a connection without a usable Redis connection, or Redis down, is 503 (Agora
  retries); a ``notifyMs`` outside the deduplication window, past or future, is 400, so a
  captured notification cannot be replayed once its deduplication marks are gone.
- Another product's notification, Agora Console's health check and a signed body this provider
  cannot read are 200 and ignored (so the Console's "Check" passes); everything else is stored
  once in the namespace of the secret that verified it (``_notification_store``).

The log names ``noticeId``, ``sid`` and ``eventType``, never a secret or a signature. This module
imports FastAPI: only the plugin imports it, and only in the API server.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_provider_agora._ncs.receiver_connections import Refused, connections
from airflow_provider_agora._ncs.store import DEDUPE_WINDOW_SECONDS, FUTURE_SKEW_SECONDS

__all__ = ["BODY_READ_SECONDS", "MAX_BODY_BYTES", "create_app", "handle_notification"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
BODY_READ_SECONDS = 10.0  # Agora waits 10 s for an answer; a body that takes longer is not Agora's
HEALTH_CHECK_CHANNEL = "test_webhook"  # the channel of Agora Console's "Check" events
COMPLAINT_SECONDS = 60.0  # one log line per connection and kind of problem in this interval
_MAX_COMPLAINTS = 512


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict[str, str]
    close: bool = False  # close the connection (the rest of the body is not read)


#: The one answer to every request that is not verified, whatever the reason.
_REFUSED = _Reply(401, {"status": "error", "message": "Missing or wrong Agora-Signature-V2."})
_TOO_LARGE = _Reply(413, {"status": "error", "message": "Body larger than 1 MiB."}, close=True)
_TOO_SLOW = _Reply(408, {"status": "error", "message": "Body not received in time."}, close=True)


class _Complaints:
    """Warnings rate-limited per connection and kind, in bounded memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._said: TTLCache[tuple[str, str], bool] = TTLCache(_MAX_COMPLAINTS, COMPLAINT_SECONDS)

    def warn(self, about: str, kind: str, message: str, *args: object) -> None:
        with self._lock:
            if (about, kind) in self._said:
                return
            self._said[(about, kind)] = True
        log.warning(message + f" (said once per {COMPLAINT_SECONDS:.0f} s)", *args)

    def clear(self) -> None:
        with self._lock:
            self._said.clear()


_complaints = _Complaints()


def _shown(conn_id: str) -> str:
    """A caller-chosen id as it may appear in the log: printable and short."""
    cleaned = "".join(char if char.isprintable() else "?" for char in conn_id[:80])
    return repr(cleaned + ("..." if len(conn_id) > 80 else ""))


def handle_notification(conn_id: str, raw: bytes, headers: Any) -> _Reply:
    """Everything but reading the body: find, verify, classify, deduplicate, store. Runs in a thread."""
    from airflow_provider_agora.notifications import (
        CLOUD_RECORDING_PRODUCT_ID,
        NotificationError,
        describe,
        namespace_of,
        parse_notification,
        verify_signature,
    )

    found = connections.get(conn_id)
    if isinstance(found, Refused):
        _complaints.warn(
            found.log_once_per,
            found.kind,
            "Refused a notification for connection %s: %s.",
            _shown(conn_id),
            found.reason,
        )
        return _REFUSED
    verified_by = [secret for secret in found.secrets if verify_signature(raw, headers, [secret])]
    if not verified_by:
        _complaints.warn(
            conn_id,
            "signature",
            "Refused a notification for connection %r: missing or wrong signature (Agora-Signature-V2 matches "
            "neither ncs_secret nor ncs_previous_secret; check the Secret in Agora Console).",
            conn_id,
        )
        return _REFUSED
    try:
        notification = parse_notification(raw)
    except NotificationError as error:
        # Signed by Agora but of a shape we do not know (Console's health check, or a new
        # event): answered 200 so that Agora neither retries nor fails the check; not stored.
        _complaints.warn(conn_id, "unreadable", "Ignored a signed notification for connection %r: %s", conn_id, error)
        return _Reply(200, {"status": "ignored", "message": str(error)})
    if notification.product_id != CLOUD_RECORDING_PRODUCT_ID:
        return _Reply(200, {"status": "ignored", "message": "Not a Cloud Recording notification."})
    if notification.cname == HEALTH_CHECK_CHANNEL:
        return _Reply(200, {"status": "ignored", "message": "Health check."})
    age_seconds = time.time() - notification.notify_ms / 1000
    if age_seconds > DEDUPE_WINDOW_SECONDS:
        log.warning("Refused %s: sent %.0f s ago, past the deduplication window.", describe(notification), age_seconds)
        return _Reply(400, {"status": "error", "message": "notifyMs is older than the deduplication window."})
    if -age_seconds > FUTURE_SKEW_SECONDS:
        log.warning("Refused %s: notifyMs is %.0f s in the future.", describe(notification), -age_seconds)
        return _Reply(400, {"status": "error", "message": "notifyMs is in the future."})
    if found.problem is not None:
        _complaints.warn(
            conn_id, "configuration", "Cannot store notifications for connection %r: %s", conn_id, found.problem
        )
        return _Reply(503, {"status": "error", "message": found.problem})
    import redis

    try:
        stored = found.store(namespace_of(verified_by[0])).add(notification)
    except (redis.RedisError, OSError) as error:
        _complaints.warn(
            conn_id,
            "redis",
            "Cannot store notifications for connection %r: Redis connection %r answers %s; Agora will retry.",
            conn_id,
            found.settings.redis_conn_id if found.settings else None,
            type(error).__name__,
        )
        return _Reply(503, {"status": "error", "message": "Redis is not available; Agora will retry."})
    if stored is None:
        log.info("Duplicate %s: already stored.", describe(notification))
        return _Reply(200, {"status": "duplicate"})
    log.info("Stored %s.", describe(notification))
    return _Reply(200, {"status": "stored"})


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _TooLarge
    return bytes(raw)


def _declared_too_large(declared: str | None) -> bool:
    if declared is None:
        return False
    declared = declared.strip()
    return not declared.isdigit() or len(declared) > 10 or int(declared) > MAX_BODY_BYTES


def _response(reply: _Reply) -> JSONResponse:
    return JSONResponse(reply.body, status_code=reply.status, headers={"Connection": "close"} if reply.close else None)


def create_app() -> FastAPI:
    """The receiver's FastAPI app (FastAPI is only imported here, in Airflow 3's API server)."""
    app = FastAPI(
        title="Agora Cloud Recording notifications",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        redirect_slashes=False,
    )

    async def receive(conn_id: str, request: Request) -> JSONResponse:
        if _declared_too_large(request.headers.get("content-length")):
            return _response(_TOO_LARGE)
        try:
            raw = await asyncio.wait_for(_read_body(request), BODY_READ_SECONDS)
        except _TooLarge:
            return _response(_TOO_LARGE)
        except asyncio.TimeoutError:
            return _response(_TOO_SLOW)
        return _response(await run_in_threadpool(handle_notification, conn_id, raw, request.headers))

    # With and without a trailing slash, answered directly: Agora does not follow redirects.
    app.add_api_route("/ncs/{conn_id}", receive, methods=["POST"])
    app.add_api_route("/ncs/{conn_id}/", receive, methods=["POST"])
    return app


def forget_complaints() -> None:
    """Let every warning be logged again at once (``testing.reset_process_state``)."""
    _complaints.clear()
