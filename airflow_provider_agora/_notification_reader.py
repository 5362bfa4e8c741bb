"""One reader of an account's notification stream per event loop, shared by every wait on it.

A triggerer runs thousands of waits on one event loop. They do not each open a Redis connection
or read in a loop of their own: one task per account reads the account's stream with one
blocking ``XREAD`` on one connection and hands each notification to the waits of its ``sid``.
A wait that starts following a recording first gets what was stored before it began (a short
recording, or a triggerer restart), read on the same connection between two blocking reads;
whatever arrives after that comes from the stream. Duplicates (the same ``noticeId`` from both
paths) are dropped per wait. Redis trouble is logged once and retried: polling is the backstop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import TYPE_CHECKING, Any

from airflow_provider_agora._notification_store import notification_keys
from airflow_provider_agora._settings import RedisSettings
from airflow_provider_agora._shared_budget import client_options

if TYPE_CHECKING:
    from airflow_provider_agora.notifications import Notification

log = logging.getLogger(__name__)

_BLOCK_MS = 500  # how long one XREAD waits; registrations are served between two reads
_BATCH = 500
_RETRY_SECONDS = 1.0


class Subscription:
    """One wait's view of its recording's notifications."""

    def __init__(self, reader: NotificationReader, sid: str) -> None:
        self.sid = sid
        self.notifications: list[Notification] = []
        self._reader = reader
        self._seen: set[str] = set()
        self._changed = asyncio.Event()
        self.caught_up = asyncio.Event()

    def deliver(self, notification: Notification) -> None:
        if notification.notice_id in self._seen:
            return
        self._seen.add(notification.notice_id)
        self.notifications.append(notification)
        self._changed.set()

    async def changed(self, timeout: float) -> bool:
        """Wait until a new notification arrives (True) or ``timeout`` seconds pass (False)."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=max(timeout, 0.0))
        except asyncio.TimeoutError:
            return False
        self._changed.clear()
        return True

    def close(self) -> None:
        self._reader.forget(self)


class NotificationReader:
    """The reading task of one account's stream on one event loop."""

    def __init__(self, redis: RedisSettings, customer_id: str) -> None:
        self.redis = redis
        self.keys = notification_keys(customer_id)
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._catch_up: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        #: Redis connections this reader opened (one, unless Redis went away and came back).
        self.connections_opened = 0

    async def follow(self, sid: str) -> Subscription:
        subscription = Subscription(self, sid)
        self._subscriptions.setdefault(sid, []).append(subscription)
        self._catch_up.append(subscription)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="agora-notification-reader")
        return subscription

    def forget(self, subscription: Subscription) -> None:
        waits = self._subscriptions.get(subscription.sid, [])
        if subscription in waits:
            waits.remove(subscription)
        if not waits:
            self._subscriptions.pop(subscription.sid, None)

    def _deliver(self, sid: str, raw: str | bytes) -> None:
        waits = self._subscriptions.get(sid)
        if not waits:
            return
        notification = _parse(raw)
        for subscription in list(waits):
            subscription.deliver(notification)

    async def _connect(self) -> Any:
        import redis.asyncio

        options = {**client_options(self.redis), "socket_timeout": _BLOCK_MS / 1000 + 5, "decode_responses": True}
        client = redis.asyncio.Redis(**options)
        self.connections_opened += 1
        return client

    async def _run(self) -> None:
        import redis

        last_id: str | None = None
        warned = False
        while self._subscriptions or self._catch_up:
            try:
                if self._client is None:
                    self._client = await self._connect()
                if last_id is None:  # everything from now on comes from the stream
                    newest = await self._client.xrevrange(self.keys["stream"], count=1)
                    last_id = newest[0][0] if newest else "0-0"
                while self._catch_up:  # what was stored before these waits began
                    subscription = self._catch_up.pop(0)
                    for raw in await self._client.lrange(self.keys["sid"] + subscription.sid, 0, -1):
                        subscription.deliver(_parse(raw))
                    subscription.caught_up.set()
                answer = await self._client.xread({self.keys["stream"]: last_id}, count=_BATCH, block=_BLOCK_MS)
                for _stream, entries in answer or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        self._deliver(fields.get("sid", ""), fields["notification"])
                if warned:
                    log.warning("Redis answers again: following Agora's notifications.")
                    warned = False
            except (redis.RedisError, OSError) as error:
                if not warned:
                    log.warning("Cannot read Agora's notifications from Redis (%s); retrying.", type(error).__name__)
                    warned = True
                await self._close_client()
                await asyncio.sleep(_RETRY_SECONDS)
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            close = getattr(client, "aclose", None) or client.close  # aclose since redis 5.0.1
            await close()


def _parse(raw: str | bytes) -> Notification:
    from airflow_provider_agora.notifications import Notification

    return Notification.from_json(json.loads(raw))


_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, RedisSettings], NotificationReader]]
_readers = weakref.WeakKeyDictionary()


def reader_for(redis: RedisSettings, customer_id: str) -> NotificationReader:
    """The one reader of an account's notifications on the running event loop."""
    per_loop = _readers.setdefault(asyncio.get_running_loop(), {})
    key = (customer_id, redis)
    reader = per_loop.get(key)
    if reader is None:
        reader = per_loop[key] = NotificationReader(redis, customer_id)
    return reader
