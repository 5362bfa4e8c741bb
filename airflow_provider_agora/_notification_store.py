"""Verified Agora notifications, kept in Redis where every Airflow process can read them.

Per Agora account (the same key prefix as the shared request budget):

- ``…:ncs:stream``: one stream of every accepted notification, bounded (``MAXLEN ~``), for readers
  that follow all of an account's recordings (a triggerer's shared reader, asset watchers);
- ``…:ncs:sid:<sid>``: the list of one recording's notifications, so that a wait finds what
  arrived before it began with one read; it expires with the deduplication window;
- ``…:ncs:seen:<noticeId>`` and ``…:ncs:end:<sid>:<eventType>``: deduplication marks. Agora sends
  a notification more than once by design and on retries (``notifyMs`` changes on each resend,
  so it is no key), and may send an ending event (11, 31, 32, 71) again after a fail-over.

Adding is one Lua script: a duplicate by either mark writes nothing, so replicas and workers of
the API server agree without coordination. ``redis`` is imported on first use.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow_provider_agora._settings import RedisSettings
from airflow_provider_agora._shared_budget import client_options, key_prefix

if TYPE_CHECKING:
    from airflow_provider_agora.notifications import Notification

DEDUPE_WINDOW_SECONDS = 24 * 3600
STREAM_MAX_LENGTH = 100_000

# KEYS: stream, seen mark, end mark, sid list.  ARGV: notification JSON, window ms, stream max
# length, "1" if the end mark applies, sid.  Returns the stream id, or false for a duplicate.
_ADD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local ending = ARGV[4] == '1'
if ending and redis.call('EXISTS', KEYS[3]) == 1 then return false end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if ending then redis.call('SET', KEYS[3], '1', 'PX', ARGV[2]) end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'sid', ARGV[5], 'notification', ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
return id
"""


def notification_keys(customer_id: str, namespace: str) -> dict[str, str]:
    """The keys of one account's notifications verified with one project's secret (``namespace``:
    ``notifications.namespace_of``)."""
    prefix = f"{key_prefix(customer_id)}:ncs:{namespace}"
    return {"stream": f"{prefix}:stream", "seen": f"{prefix}:seen:", "end": f"{prefix}:end:", "sid": f"{prefix}:sid:"}


class NotificationStore:
    """One account's notifications in one Redis (sync: the receiver runs it in a thread pool)."""

    def __init__(self, redis: RedisSettings, customer_id: str, *, window_seconds: int = DEDUPE_WINDOW_SECONDS) -> None:
        import redis as redis_client

        self.keys = notification_keys(customer_id)
        self.window_ms = window_seconds * 1000
        self._client = redis_client.Redis(**client_options(redis))
        self._add = self._client.register_script(_ADD)

    def add(self, notification: Notification) -> str | None:
        """Store a verified notification; its stream id, or None when it is a duplicate."""
        from airflow_provider_agora.notifications import ENDING_EVENT_TYPES

        sid = notification.sid or ""
        ending = notification.event_type in ENDING_EVENT_TYPES and bool(sid)
        keys = [
            self.keys["stream"],
            self.keys["seen"] + notification.notice_id,
            self.keys["end"] + f"{sid}:{notification.event_type}",
            self.keys["sid"] + sid,
        ]
        document = json.dumps(notification.to_json(), sort_keys=True, separators=(",", ":"))
        stored: Any = self._add(
            keys=keys, args=[document, self.window_ms, STREAM_MAX_LENGTH, "1" if ending else "0", sid]
        )
        if not stored:
            return None
        return stored.decode() if isinstance(stored, bytes) else str(stored)

    def for_sid(self, sid: str) -> list[Notification]:
        """Every stored notification of one recording, in the order they were accepted."""
        from airflow_provider_agora.notifications import Notification

        return [Notification.from_json(json.loads(raw)) for raw in self._client.lrange(self.keys["sid"] + sid, 0, -1)]

    def close(self) -> None:
        self._client.close()
