"""One reader of an account's notification streams per event loop, shared by every wait on it.

A triggerer runs thousands of waits on one event loop. They do not each open a Redis connection
or read in a loop of their own: one task per account and set of namespaces (the connection's
``notification_namespaces``: two while its secret is being rotated) reads those namespaces'
streams with one blocking ``XREAD`` on one connection and hands each notification to the waits of
its ``sid``. A wait that starts following a recording first gets what was stored before it began
(a short recording, or a triggerer restart) from every namespace's list of the recording, read on
the same connection between two blocking reads; whatever arrives after that comes from the
streams. Duplicates (the same ``noticeId`` from both paths) are dropped per wait. A stored entry
that cannot be read is skipped and logged once: it never stops the task that serves every other
wait. Redis trouble is logged once and retried: polling is the backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_agora._ncs.store import UnreadableEntries, merge_oldest_first, notification_keys
from airflow_provider_agora._redis import RedisSettings, async_client

if TYPE_CHECKING:
    from airflow_provider_agora.notifications import Notification

log = logging.getLogger(__name__)

_BLOCK_MS = 500  # how long one XREAD waits; registrations are served between two reads
_BATCH = 500
_RETRY_SECONDS = 1.0


class Subscription:
    """One wait's view of its recording's notifications.

    The wait reads them with :meth:`look` and waits for more with :meth:`changed`. "New" means not
    yet looked at, a state rather than a one-shot signal: a ``changed()`` whose answer is thrown away
    (a race against a ``query`` that finished first) loses nothing, the next one answers at once.
    """

    def __init__(self, reader: NotificationReader, sid: str) -> None:
        self.sid = sid
        self.notifications: list[Notification] = []
        self._reader = reader
        self._seen: set[str] = set()
        self._looked_at = 0  # how many of ``notifications`` the wait has looked at
        self._arrived = asyncio.Event()
        self.caught_up = asyncio.Event()

    def deliver(self, notification: Notification) -> None:
        if notification.notice_id in self._seen:
            return
        self._seen.add(notification.notice_id)
        self.notifications.append(notification)
        self._arrived.set()

    def look(self) -> list[Notification]:
        """Every notification so far, oldest first; from now on only later ones count as new."""
        self._looked_at = len(self.notifications)
        return self.notifications

    async def changed(self, timeout: float) -> bool:
        """Whether a notification not yet looked at is here (True at once) or arrives within
        ``timeout`` seconds (False when none does)."""
        if self._looked_at < len(self.notifications):
            return True
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout=max(timeout, 0.0))
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        self._reader.forget(self)


class NotificationReader:
    """The reading task of one account's streams (one per namespace) on one event loop."""

    def __init__(self, redis: RedisSettings, customer_id: str, namespaces: Sequence[str]) -> None:
        if not namespaces:
            raise ValueError("A notification reader needs at least one namespace.")
        self.redis = redis
        self.namespaces = tuple(namespaces)
        self.keys = {namespace: notification_keys(customer_id, namespace) for namespace in self.namespaces}
        self._namespace_of_stream = {keys["stream"]: namespace for namespace, keys in self.keys.items()}
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._catch_up: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._unreadable = UnreadableEntries(log)
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

    def _deliver(self, stream: str, entry_id: str, fields: dict[str, Any]) -> None:
        """Hand one stream entry to the waits of its sid; an unreadable one is skipped (logged once)."""
        waits = self._subscriptions.get(fields.get("sid") or "")
        if not waits:
            return
        where = f"entry {entry_id} of namespace {self._namespace_of_stream.get(stream, stream)}'s stream"
        notification = self._unreadable.load(fields.get("notification"), where)
        if notification is None:
            return
        for subscription in list(waits):
            subscription.deliver(notification)

    async def _stored_for(self, sid: str) -> list[Notification]:
        """What every namespace's list of the recording holds, merged oldest first; one round trip."""
        pipeline = self._client.pipeline(transaction=False)
        for keys in self.keys.values():
            pipeline.lrange(keys["sid"] + sid, 0, -1)
        per_namespace: list[list[Notification]] = []
        for namespace, raws in zip(self.namespaces, await pipeline.execute(), strict=True):
            where = f"recording sid={sid!r} in namespace {namespace}"
            loaded = (self._unreadable.load(raw, where) for raw in raws)
            per_namespace.append([notification for notification in loaded if notification is not None])
        return merge_oldest_first(per_namespace)

    async def _connect(self) -> Any:
        client = async_client(self.redis, block_ms=_BLOCK_MS)
        self.connections_opened += 1
        return client

    async def _run(self) -> None:
        import redis

        last_ids: dict[str, str] | None = None
        warned = False
        while self._subscriptions or self._catch_up:
            try:
                if self._client is None:
                    self._client = await self._connect()
                if last_ids is None:  # everything from now on comes from the streams
                    newest_ids: dict[str, str] = {}
                    for keys in self.keys.values():
                        newest = await self._client.xrevrange(keys["stream"], count=1)
                        newest_ids[keys["stream"]] = newest[0][0] if newest else "0-0"
                    last_ids = newest_ids  # only once every stream has its start
                while self._catch_up:  # what was stored before these waits began
                    subscription = self._catch_up[0]
                    for notification in await self._stored_for(subscription.sid):
                        subscription.deliver(notification)
                    self._catch_up.pop(0)
                    subscription.caught_up.set()
                answer = await self._client.xread(last_ids, count=_BATCH, block=_BLOCK_MS)
                for stream, entries in answer or []:
                    for entry_id, fields in entries:
                        last_ids[stream] = entry_id
                        self._deliver(stream, entry_id, fields or {})
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


_ReaderKey = tuple[RedisSettings, str, tuple[str, ...]]
_readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_ReaderKey, NotificationReader]]
_readers = weakref.WeakKeyDictionary()


def reader_for(redis: RedisSettings, customer_id: str, namespaces: Sequence[str]) -> NotificationReader:
    """The one reader of an account's notifications in ``namespaces`` on the running event loop."""
    per_loop = _readers.setdefault(asyncio.get_running_loop(), {})
    key = (redis, customer_id, tuple(namespaces))
    reader = per_loop.get(key)
    if reader is None:
        reader = per_loop[key] = NotificationReader(redis, customer_id, namespaces)
    return reader


async def close_readers() -> None:
    """Stop and forget the readers of the running event loop, closing their Redis clients
    (``testing.areset_process_state``); waits that still follow them hear nothing more."""
    for reader in _readers.pop(asyncio.get_running_loop(), {}).values():
        task = reader._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await reader._close_client()
