"""``AgoraRecordingNotificationTrigger``: an asset watcher that fires once per finished recording.

For Airflow 3's event-driven scheduling::

    Asset("agora_recordings", watchers=[AssetWatcher(name="agora", trigger=AgoraRecordingNotificationTrigger())])

Each recording of the account that Agora reports finished with its files (31/32 "uploaded" with
status 0, or 71 for web recording: see ``airflow_provider_agora.notifications``) becomes one asset
event whose ``payload`` is the result dict the sensor returns (``ended_by: "notification"``). No
sensor, no polling: it reads the notification streams in Redis that the receiver in the API server
writes, one per namespace of the connection (its ``ncs_secret``, and ``ncs_previous_secret`` during
a rotation), and only those: a notification verified with another project's secret never fires.

With several triggerers, a consumer group on each stream hands each entry to one of them, and a
claim in Redis (``…:ncs:<namespace>:fired:<group>:<sid>``, set in every namespace at once) lets
each recording fire once even when Agora sent both 31 and 32, or a triggerer died after firing but
before acknowledging (its entries are then claimed by another one after ``_IDLE_CLAIM_MS``). A
triggerer that dies between the claim and the event loses that event; one that dies before the
claim loses nothing. An entry that cannot be read is acknowledged and skipped (logged once).

While Redis cannot be reached the watcher logs one warning, retries with a back-off (1 s doubling
to 30 s) and logs one line when Redis answers again; it re-creates its consumer groups if Redis
lost them. A recording that ended while Redis was down could not be stored by the receiver.
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

if TYPE_CHECKING:
    from airflow_provider_agora.notifications import Notification

__all__ = ["AgoraRecordingNotificationTrigger"]

log = logging.getLogger(__name__)

DEFAULT_CONSUMER_GROUP = "airflow-asset-watchers"
_BLOCK_MS = 1000
_BATCH = 100
_IDLE_CLAIM_MS = 60_000
_FIRED_TTL_MS = 7 * 24 * 3600 * 1000
_BACKOFF_FIRST_SECONDS = 1.0
_BACKOFF_MAX_SECONDS = 30.0

# KEYS[1..n] - the recording's fired claim in each namespace the watcher reads
# ARGV[1]    - the claim's value (the noticeId that fired it)
# ARGV[2]    - milliseconds the claim lives
# Returns 1 if this call claimed the recording (no claim existed; all are set now), else 0.
_CLAIM = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
for i = 1, #KEYS do
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
    """

    def __init__(
        self,
        *,
        agora_conn_id: str = DEFAULT_CONN_ID,
        channels: Sequence[str] | None = None,
        consumer_group: str = DEFAULT_CONSUMER_GROUP,
    ) -> None:
        super().__init__()
        self.agora_conn_id = agora_conn_id
        if isinstance(channels, str):  # one channel name, not a sequence of one-letter names
            channels = [channels]
        self.channels = list(channels) if channels else None
        self.consumer_group = consumer_group

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"agora_conn_id": self.agora_conn_id, "channels": self.channels, "consumer_group": self.consumer_group},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import redis

        from airflow_provider_agora._notification_reader import async_client
        from airflow_provider_agora._notification_store import UnreadableEntries, notification_keys
        from airflow_provider_agora.exceptions import AgoraConfigurationError
        from airflow_provider_agora.hooks.agora import AgoraAsyncHook

        settings = await AgoraAsyncHook(self.agora_conn_id).get_settings()
        if settings.redis is None or not settings.receives_notifications:
            raise AgoraConfigurationError(
                f"AgoraRecordingNotificationTrigger needs connection {self.agora_conn_id!r} to have ncs_secret and "
                f"redis_conn_id: Agora's notifications reach Airflow through them."
            )
        keys = [notification_keys(settings.customer_id, namespace) for namespace in settings.notification_namespaces]
        streams = [namespace_keys["stream"] for namespace_keys in keys]
        fired_prefixes = [f"{namespace_keys['fired']}{self.consumer_group}:" for namespace_keys in keys]
        consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self)}"
        unreadable = UnreadableEntries(log)
        client: Any = None
        claim: Any = None
        groups_ready = False
        regrouped = False  # the groups were re-created after NOGROUP and nothing was read since
        cursors: dict[str, str] = {}
        backoff = _BACKOFF_FIRST_SECONDS
        warned = False
        try:
            while True:
                try:
                    if client is None:
                        client = async_client(settings.redis, block_ms=_BLOCK_MS)
                        claim = client.register_script(_CLAIM)
                        groups_ready = False
                    if not groups_ready:
                        for stream in streams:
                            await self._create_group(client, stream)
                        groups_ready = True
                        cursors = dict.fromkeys(streams, "0-0")
                        if warned:
                            log.info("Redis answers again: watching Agora's notifications.")
                            warned = False
                        backoff = _BACKOFF_FIRST_SECONDS
                    # Entries a dead triggerer took but never acknowledged, then new ones.
                    entries: list[tuple[str, str, Any]] = []
                    for stream in streams:
                        answer: Any = await client.xautoclaim(
                            stream,
                            self.consumer_group,
                            consumer,
                            min_idle_time=_IDLE_CLAIM_MS,
                            start_id=cursors[stream],
                            count=_BATCH,
                        )
                        cursors[stream] = answer[0]
                        entries += [(stream, entry_id, fields) for entry_id, fields in answer[1] if entry_id]
                    fresh: Any = await client.xreadgroup(
                        self.consumer_group,
                        consumer,
                        dict.fromkeys(streams, ">"),
                        count=_BATCH,
                        block=None if entries else _BLOCK_MS,
                    )
                    regrouped = False
                    for stream, batch in fresh or []:
                        entries += [(stream, entry_id, fields) for entry_id, fields in batch]
                    for stream, entry_id, fields in entries:
                        where = f"entry {entry_id} of stream {stream}"
                        notification = unreadable.load((fields or {}).get("notification"), where)
                        if notification is not None:
                            event = await self._event_for(claim, fired_prefixes, notification)
                            if event is not None:
                                yield event
                        await client.xack(stream, self.consumer_group, entry_id)
                except (redis.RedisError, OSError) as error:
                    if isinstance(error, redis.ResponseError) and "NOGROUP" in str(error) and not regrouped:
                        groups_ready, regrouped = False, True  # Redis lost a stream or its group: re-create
                        continue
                    if not warned:
                        reason = type(error).__name__
                        log.warning("Cannot read Agora's notifications from Redis (%s); retrying.", reason)
                        warned = True
                    await _close(client)
                    client = None
                    await asyncio.sleep(backoff)  # the back-off itself
                    backoff = min(backoff * 2, _BACKOFF_MAX_SECONDS)
        finally:
            await _close(client)

    async def _create_group(self, client: Any, stream: str) -> None:
        import redis

        try:
            await client.xgroup_create(stream, self.consumer_group, id="$", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _event_for(
        self, claim: Any, fired_prefixes: list[str], notification: Notification
    ) -> TriggerEvent | None:
        """The recording's event, or None: not a finished recording, another channel, or fired already."""
        from airflow_provider_agora.notifications import ENDED

        if notification.kind != ENDED or not notification.sid:
            return None
        if notification.event_type in (31, 32) and not notification.files:
            return None  # web recording's 31 lists no files: its 71 does
        if self.channels is not None and notification.cname not in self.channels:
            return None
        fired = [prefix + notification.sid for prefix in fired_prefixes]
        if not await claim(keys=fired, args=[notification.notice_id, _FIRED_TTL_MS]):
            return None  # this recording has fired already (31 and 32, or a re-delivered entry)
        log.info("Recording sid=%s finished (notification %s).", notification.sid, notification.notice_id)
        return TriggerEvent(
            {
                "resource_id": None,
                "sid": notification.sid,
                "cname": notification.cname,
                "recording_mode": None,
                "status": None,
                "ended_by": "notification",
                "files": notification.files,
                "server_response": {},
                "notification": {"notice_id": notification.notice_id, "event_type": notification.event_type},
            }
        )


async def _close(client: Any) -> None:
    if client is None:
        return
    close = getattr(client, "aclose", None) or client.close  # aclose since redis 5.0.1
    with contextlib.suppress(Exception):
        await close()
