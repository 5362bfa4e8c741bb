"""``AgoraRecordingNotificationTrigger``: an asset watcher that fires once per finished recording.

For Airflow 3's event-driven scheduling::

    Asset("agora_recordings", watchers=[AssetWatcher(name="agora", trigger=AgoraRecordingNotificationTrigger())])

Each recording of the account that Agora reports finished with its files (31/32 "uploaded" with
status 0, or 71 for web recording: see ``airflow_provider_agora.notifications``) becomes one asset
event. Its ``payload`` has the keys of the sensor's result, but not its values: ``sid``, ``cname``,
``files`` (the notification's file list), ``ended_by`` "notification" and ``notification``
(``notice_id``, ``event_type``); ``resource_id``, ``recording_mode`` and ``status`` are None and
``server_response`` is empty, since a notification carries none of them (the backstop's events,
below, fill them from Agora's answer).

No sensor, no polling: it reads the notification streams in Redis that the receiver in the API
server writes, one per namespace of the connection (its ``ncs_secret``, and ``ncs_previous_secret``
during a rotation), and only those: a notification verified with another project's secret never
fires.

With several triggerers, a consumer group on each stream hands each entry to one of them, and a
claim in Redis (``…:ncs:<namespace>:fired:<group>:<sid>``, set in every namespace at once) lets
each recording fire once even when Agora sent both 31 and 32, or a triggerer died after firing but
before acknowledging (its entries are then claimed by another one after ``_IDLE_CLAIM_MS``). A
triggerer that dies between the claim and the event loses that event; one that dies before the
claim loses nothing. An entry that cannot be read is acknowledged and skipped (logged once).

While Redis cannot be reached the watcher logs one warning, retries with a back-off (1 s doubling
to 30 s) and logs one line when Redis answers again; it re-creates its consumer groups if Redis
lost them. A recording that ended while Redis was down could not be stored by the receiver.

The backstop (``_backstop``): a recording whose ending notification was lost (Agora sends one at
most four times) would never fire, so the watcher keeps the recordings it has heard of as pending
in Redis and, ``backstop_delay`` seconds after the last it heard of one that has not fired, asks
Agora's ``query`` about it, beside the reading and within the account's request budget. How is in
that module; what it can and cannot recover is in the class docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_agora._connection_form import DEFAULT_CONN_ID
from airflow_provider_agora.triggers._backstop import _Backstop, _Keys

if TYPE_CHECKING:
    from airflow_provider_agora._ncs.store import UnreadableEntries
    from airflow_provider_agora._redis import RedisSettings
    from airflow_provider_agora.hooks.agora import AgoraAsyncHook
    from airflow_provider_agora.notifications import Notification

__all__ = ["AgoraRecordingNotificationTrigger"]

log = logging.getLogger(__name__)

DEFAULT_CONSUMER_GROUP = "airflow-asset-watchers"
DEFAULT_BACKSTOP_DELAY = 600.0
DEFAULT_BACKSTOP_INTERVAL = 30.0
_BLOCK_MS = 1000
_BATCH = 100
_IDLE_CLAIM_MS = 60_000
_FIRED_TTL_MS = 7 * 24 * 3600 * 1000
_BACKOFF_FIRST_SECONDS = 1.0
_BACKOFF_MAX_SECONDS = 30.0
#: A 404 counts as "the session is gone" once it has lasted Agora's fail-over window (the backstop's).
_NOT_FOUND_GRACE_SECONDS = 90.0

# KEYS[1..n]     - the recording's fired claim of the group in each namespace the watcher reads
# KEYS[n+1..2n]  - the group's pending set (backstop) in each of those namespaces
# ARGV[1]        - the claim's value (the noticeId that fired it, or "backstop:<ended_by>")
# ARGV[2]        - milliseconds the claim lives
# ARGV[3]        - the sid
# Returns 1 if this call claimed the recording (no claim existed; all are set now), else 0. Either
# way the recording is no longer pending: it fired, now or before.
_CLAIM = """
local n = #KEYS / 2
for i = n + 1, 2 * n do
  redis.call('ZREM', KEYS[i], ARGV[3])
end
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class AgoraRecordingNotificationTrigger(BaseEventTrigger):
    """One asset event per finished recording of an account (optionally only some channels).

    :param agora_conn_id: an ``agora`` connection with ``ncs_secret`` and ``redis_conn_id``.
    :param channels: only recordings of these channel names (``cname``); default all.
    :param consumer_group: the Redis consumer group; watchers with different groups each see every
        recording once.
    :param backstop: ask Agora about recordings whose ending notification never arrives, so that a
        lost notification delays an event instead of losing it.
    :param backstop_delay: seconds after the last notification heard of a recording (or its start)
        before asking Agora about it, and between two questions while Agora says it runs.
    :param backstop_interval: seconds between two rounds of questions; a round asks about at most
        ``_BACKSTOP_BATCH`` (20) recordings, within the account's request budget.

    What the backstop recovers: a recording started through ``AgoraHook.start`` (the start
    operator) with a connection that has this connection's ``ncs_secret`` and a ``redis_conn_id``,
    whose ending notification was lost. It fires once, through the same claim as a notification,
    with the notification's payload keys and ``ended_by`` "status" (Agora answered 8, exited) or
    "not_found" (Agora answered 404 for longer than its 90 s fail-over window: the session is gone),
    ``resource_id``, ``recording_mode`` and ``status`` from Agora, ``notification`` None, and
    ``files`` as Agora's last answer listed them. A recording that is already gone cannot give its
    files back: after a 404 they are those of the last answer that showed it running, often none
    (and never MP4 files, which ``query`` does not list). A late ending notification fires no second
    event.

    What it cannot recover: a recording it never heard of (no notification of it arrived, and it was
    started elsewhere or while Redis was down); one heard of but not started through the provider,
    whose ``resourceId`` nobody recorded (logged once: its DAG run depends on the notification);
    one started more than 3 days ago (``STARTED_TTL_SECONDS``). It gives no event for status 20
    (abnormal exit) or when a notification says the recording failed (11 with ``exitStatus`` 1,
    31/32 with a failed upload, 71 with an error, 72); a 404 cannot tell a normal end from a failure
    whose notifications were also lost, and fires. A Redis that comes back empty forgets what only it
    knew: the watcher writes back the recordings it heard of itself (up to ``_TRACKED_LIMIT``), not
    those only started.
    """

    def __init__(
        self,
        *,
        agora_conn_id: str = DEFAULT_CONN_ID,
        channels: Sequence[str] | None = None,
        consumer_group: str = DEFAULT_CONSUMER_GROUP,
        backstop: bool = True,
        backstop_delay: float = DEFAULT_BACKSTOP_DELAY,
        backstop_interval: float = DEFAULT_BACKSTOP_INTERVAL,
    ) -> None:
        super().__init__()
        self.agora_conn_id = agora_conn_id
        if isinstance(channels, str):  # one channel name, not a sequence of one-letter names
            channels = [channels]
        self.channels = list(channels) if channels else None
        self.consumer_group = consumer_group
        self.backstop = bool(backstop)
        self.backstop_delay = float(backstop_delay)
        self.backstop_interval = float(backstop_interval)
        self._backstop: _Backstop | None = None

    @property
    def backstop_rounds(self) -> int:
        """Backstop rounds finished by ``run()`` so far (a round: take the due recordings, ask, settle)."""
        return self._backstop.rounds if self._backstop is not None else 0

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "agora_conn_id": self.agora_conn_id,
                "channels": self.channels,
                "consumer_group": self.consumer_group,
                "backstop": self.backstop,
                "backstop_delay": self.backstop_delay,
                "backstop_interval": self.backstop_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import redis

        from airflow_provider_agora._ncs.store import UnreadableEntries
        from airflow_provider_agora.hooks.agora import AgoraAsyncHook

        hook = AgoraAsyncHook(self.agora_conn_id)
        redis_settings, keys = await self._redis_and_keys(hook)
        keyring = _Keys(keys, self.consumer_group)
        backstop = (
            _Backstop(self, hook, keyring, fired_ttl_ms=_FIRED_TTL_MS, not_found_grace=_NOT_FOUND_GRACE_SECONDS)
            if self.backstop
            else None
        )
        self._backstop = backstop
        consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self)}"
        streams = [namespace_keys["stream"] for namespace_keys in keys]
        reader = _StreamReader(redis_settings, streams, self.consumer_group, consumer, backstop)
        unreadable = UnreadableEntries(log)
        try:
            while True:
                try:
                    await reader.ready()
                    for stream, entry_id, fields in await reader.read():
                        event = await self._on_entry(reader, keyring, unreadable, stream, entry_id, fields)
                        if event is not None:
                            yield event
                        await reader.client.xack(stream, self.consumer_group, entry_id)
                    if backstop is not None:
                        async with contextlib.aclosing(backstop.step(reader.client, reader.claim)) as settled:
                            async for event in settled:
                                yield event
                except (redis.RedisError, OSError) as error:
                    await reader.recover(error)
        finally:
            if backstop is not None:
                await backstop.close()
            await _close(reader.client)

    async def _redis_and_keys(self, hook: AgoraAsyncHook) -> tuple[RedisSettings, list[dict[str, str]]]:
        """The connection's Redis and the notification keys of each namespace it reads; refuses a
        connection that cannot receive notifications before the watcher starts waiting on nothing."""
        from airflow_provider_agora._ncs.store import notification_keys
        from airflow_provider_agora.exceptions import AgoraConfigurationError

        settings = await hook.get_settings()
        if settings.redis is None or not settings.receives_notifications:
            raise AgoraConfigurationError(
                f"AgoraRecordingNotificationTrigger needs connection {self.agora_conn_id!r} to have ncs_secret and "
                f"redis_conn_id: Agora's notifications reach Airflow through them."
            )
        keys = [notification_keys(settings.customer_id, namespace) for namespace in settings.notification_namespaces]
        return settings.redis, keys

    async def _on_entry(
        self,
        reader: _StreamReader,
        keyring: _Keys,
        unreadable: UnreadableEntries,
        stream: str,
        entry_id: str,
        fields: Any,
    ) -> TriggerEvent | None:
        """One stream entry: the event it fires, or None (the backstop hears of the recording then);
        the caller acknowledges the entry after yielding the event, so a triggerer that dies before
        the event is delivered leaves the entry to another one."""
        notification = unreadable.load((fields or {}).get("notification"), f"entry {entry_id} of stream {stream}")
        if notification is None:
            return None
        event = await self._event_for(reader.claim, keyring, notification)
        if event is None and self._backstop is not None:
            await self._backstop.hear(reader.client, reader.streams.index(stream), notification)
        return event

    async def _event_for(self, claim: Any, keyring: _Keys, notification: Notification) -> TriggerEvent | None:
        """The recording's event, or None: not a finished recording, another channel, or fired already."""
        from airflow_provider_agora.notifications import ENDED

        if notification.kind != ENDED or not notification.sid:
            return None
        if notification.event_type in (31, 32) and not notification.files:
            return None  # web recording's 31 lists no files: its 71 does
        if self.channels is not None and notification.cname not in self.channels:
            return None
        sid = notification.sid
        if self._backstop is not None:
            self._backstop.forget_here(sid)
        if not await claim(keys=keyring.claim(sid), args=[notification.notice_id, _FIRED_TTL_MS, sid]):
            return None  # this recording has fired already (31 and 32, or a re-delivered entry)
        log.info("Recording sid=%s finished (notification %s).", sid, notification.notice_id)
        return TriggerEvent(
            {
                "resource_id": None,
                "sid": sid,
                "cname": notification.cname,
                "recording_mode": None,
                "status": None,
                "ended_by": "notification",
                "files": notification.files,
                "server_response": {},
                "notification": {"notice_id": notification.notice_id, "event_type": notification.event_type},
            }
        )


class _StreamReader:
    """The watcher's side of Redis: the client and its scripts, the consumer groups, the cursors of
    the entries that dead triggerers left, and the outage state (one warning, a back-off, one line
    when Redis answers again). Kept apart from ``run()`` so that its loop reads as what it does."""

    def __init__(
        self,
        settings: RedisSettings,
        streams: list[str],
        group: str,
        consumer: str,
        backstop: _Backstop | None,
    ) -> None:
        self.settings = settings
        self.streams = streams
        self.group = group
        self.consumer = consumer
        self.backstop = backstop
        self.client: Any = None
        self.claim: Any = None
        self._groups_ready = False
        self._regrouped = False  # the groups were re-created after NOGROUP and nothing was read since
        self._cursors: dict[str, str] = {}
        self._backoff = _BACKOFF_FIRST_SECONDS
        self._warned = False

    async def ready(self) -> None:
        """Connect if not connected, and make the consumer groups if they are not known to exist."""
        from airflow_provider_agora._redis import async_client

        if self.client is None:
            self.client = async_client(self.settings, block_ms=_BLOCK_MS)
            self.claim = self.client.register_script(_CLAIM)
            if self.backstop is not None:
                self.backstop.use(self.client)
            self._groups_ready = False
        if not self._groups_ready:
            await self._make_groups()

    async def _make_groups(self) -> None:
        """Make the groups (a new connection, or Redis lost them), then start over from the oldest
        entries left unacknowledged; the first success after an outage ends it."""
        for stream in self.streams:
            await self._create_group(stream)
        if self.backstop is not None:
            await self.backstop.write_back(self.client)  # into a Redis that may have come back empty
        self._groups_ready = True
        self._cursors = dict.fromkeys(self.streams, "0-0")
        if self._warned:
            log.info("Redis answers again: watching Agora's notifications.")
            self._warned = False
        self._backoff = _BACKOFF_FIRST_SECONDS

    async def _create_group(self, stream: str) -> None:
        import redis

        try:
            await self.client.xgroup_create(stream, self.group, id="$", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def read(self) -> list[tuple[str, str, Any]]:
        """``(stream, entry id, fields)``: the entries a dead triggerer took but never acknowledged,
        then new ones (blocking only when there were none, until the backstop's next round at most)."""
        entries: list[tuple[str, str, Any]] = []
        for stream in self.streams:
            answer: Any = await self.client.xautoclaim(
                stream,
                self.group,
                self.consumer,
                min_idle_time=_IDLE_CLAIM_MS,
                start_id=self._cursors[stream],
                count=_BATCH,
            )
            self._cursors[stream] = answer[0]
            entries += [(stream, entry_id, fields) for entry_id, fields in answer[1] if entry_id]
        block_ms = _BLOCK_MS if self.backstop is None else self.backstop.block_ms(_BLOCK_MS)
        fresh: Any = await self.client.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self.streams, ">"),
            count=_BATCH,
            block=None if entries else block_ms,
        )
        self._regrouped = False
        for stream, batch in fresh or []:
            entries += [(stream, entry_id, fields) for entry_id, fields in batch]
        return entries

    async def recover(self, error: Exception) -> None:
        """After a Redis error: re-create lost groups at once (once in a row), else warn once, drop
        the connection and wait out the back-off (1 s doubling to 30 s)."""
        import redis

        if isinstance(error, redis.ResponseError) and "NOGROUP" in str(error) and not self._regrouped:
            self._groups_ready, self._regrouped = False, True  # Redis lost a stream or its group: re-create
            return
        if not self._warned:
            reason = type(error).__name__
            log.warning("Cannot read Agora's notifications from Redis (%s); retrying.", reason)
            self._warned = True
        await _close(self.client)
        self.client = None
        await asyncio.sleep(self._backoff)  # the back-off itself
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX_SECONDS)


async def _close(client: Any) -> None:
    if client is None:
        return
    close = getattr(client, "aclose", None) or client.close  # aclose since redis 5.0.1
    with contextlib.suppress(Exception):
        await close()
