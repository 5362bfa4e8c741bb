"""``AgoraRecordingNotificationTrigger``: an asset watcher that fires once per finished recording.

For Airflow 3's event-driven scheduling::

    Asset("agora_recordings", watchers=[AssetWatcher(name="agora", trigger=AgoraRecordingNotificationTrigger())])

Each recording of the account that Agora reports finished with its files (31/32 "uploaded" with
status 0, or 71 for web recording: see ``airflow_provider_agora.notifications``) becomes one asset
event whose ``payload`` is the result dict the sensor returns (``ended_by: "notification"``). No
sensor, no polling: it reads the account's notification stream in Redis, which the receiver in
the API server writes.

With several triggerers, a consumer group hands each stream entry to one of them, and a claim in
Redis (``…:ncs:fired:<sid>``) lets each recording fire once even when Agora sent both 31 and 32,
or a triggerer died after firing but before acknowledging (its entries are then claimed by
another one after ``_IDLE_CLAIM_MS``). A triggerer that dies between the claim and the event
loses that event; one that dies before the claim loses nothing.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_agora._connection_form import DEFAULT_CONN_ID

__all__ = ["AgoraRecordingNotificationTrigger"]

DEFAULT_CONSUMER_GROUP = "airflow-asset-watchers"
_BLOCK_MS = 1000
_IDLE_CLAIM_MS = 60_000
_FIRED_TTL_MS = 7 * 24 * 3600 * 1000


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
        self.channels = list(channels) if channels else None
        self.consumer_group = consumer_group

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"agora_conn_id": self.agora_conn_id, "channels": self.channels, "consumer_group": self.consumer_group},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import redis
        import redis.asyncio

        from airflow_provider_agora._notification_store import notification_keys
        from airflow_provider_agora._shared_budget import client_options
        from airflow_provider_agora.exceptions import AgoraConfigurationError
        from airflow_provider_agora.hooks.agora import AgoraAsyncHook

        settings = await AgoraAsyncHook(self.agora_conn_id).get_settings()
        if settings.redis is None or not settings.receives_notifications:
            raise AgoraConfigurationError(
                f"AgoraRecordingNotificationTrigger needs connection {self.agora_conn_id!r} to have ncs_secret and "
                f"redis_conn_id: Agora's notifications reach Airflow through them."
            )
        keys = notification_keys(settings.customer_id)
        fired_prefix = keys["stream"].rsplit(":", 1)[0] + f":fired:{self.consumer_group}:"
        consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self)}"
        client = redis.asyncio.Redis(
            **{**client_options(settings.redis), "socket_timeout": _BLOCK_MS / 1000 + 5, "decode_responses": True}
        )
        try:
            try:
                await client.xgroup_create(keys["stream"], self.consumer_group, id="$", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
            while True:
                # Entries a dead triggerer took but never acknowledged, then new ones.
                claimed: Any = await client.xautoclaim(
                    keys["stream"], self.consumer_group, consumer, min_idle_time=_IDLE_CLAIM_MS, count=100
                )
                fresh: Any = await client.xreadgroup(
                    self.consumer_group, consumer, {keys["stream"]: ">"}, count=100, block=_BLOCK_MS
                )
                entries = list(claimed[1]) + [entry for _stream, batch in fresh or [] for entry in batch]
                for entry_id, fields in entries:
                    event = await self._event_for(client, fired_prefix, fields)
                    if event is not None:
                        yield event
                    await client.xack(keys["stream"], self.consumer_group, entry_id)
        finally:
            close = getattr(client, "aclose", None) or client.close
            await close()

    async def _event_for(self, client: Any, fired_prefix: str, fields: dict[str, str]) -> TriggerEvent | None:
        from airflow_provider_agora.notifications import ENDED, Notification

        notification = Notification.from_json(json.loads(fields["notification"]))
        if notification.kind != ENDED or not notification.sid:
            return None
        if notification.event_type in (31, 32) and not notification.files:
            return None  # web recording's 31 lists no files: its 71 does
        if self.channels is not None and notification.cname not in self.channels:
            return None
        if not await client.set(fired_prefix + notification.sid, notification.notice_id, nx=True, px=_FIRED_TTL_MS):
            return None  # this recording has fired already (31 and 32, or a re-delivered entry)
        self.log.info("Recording sid=%s finished (notification %s).", notification.sid, notification.notice_id)
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
