"""Verified Agora notifications, kept in Redis where every Airflow process can read them.

Notifications are kept per Agora account (the same key prefix as the shared request budget) and,
within it, per *namespace*: ``notifications.namespace_of`` the NCS secret that verified them. One
project's secret therefore can neither settle another project's waits nor suppress its genuine
notifications as duplicates: every key below, the deduplication marks included, is namespaced.
A connection reads every namespace of ``AgoraSettings.notification_namespaces`` (two while its
secret is being rotated).

Keys, all under ``airflow-provider-agora:{<account digest>}:ncs:<namespace>:`` (the braces keep an
account's keys in one Redis Cluster slot, as one script needs), and their bounds:

==========================  ======================================================================
key                         what it holds, and its bound
==========================  ======================================================================
``stream``                  every accepted notification, for readers that follow all of an
                            account's recordings (a triggerer's shared reader, asset watchers, whose
                            consumer groups live on it); no expiry, at most ``STREAM_MAX_LENGTH``
                            (100 000) entries and ``STREAM_MAX_BYTES`` (256 MiB), the oldest trimmed
                            first (at most ``STREAM_TRIM_PER_ADD``, 1 000, per add)
``stream:bytes``            the stream's size in bytes (each entry keeps its own in a field
                            ``bytes``); one integer, no expiry
``sid:<sid>``               one recording's notifications, oldest first, so that a wait finds what
                            arrived before it began with one read; the newest
                            ``RECORDING_MAX_NOTIFICATIONS`` (200); expires ``MARK_TTL_SECONDS``
                            (24 h 5 min) after the recording's last notification
``seen:<noticeId>``         deduplication mark by ``noticeId``; expires after ``MARK_TTL_SECONDS``
``end:<sid>:<eventType>``   deduplication mark of an ending event (11, 31, 32, 71), which Agora may
                            send again after a fail-over; expires after ``MARK_TTL_SECONDS``
``fired:<group>:<sid>``     an asset watcher group's claim that a recording fired, set in every
                            namespace the watcher reads (``triggers.notifications``); expires after
                            7 days
``started:<sid>``           a recording started through ``AgoraHook.start`` (its ``resourceId``,
                            mode, channel, uid and App ID: what a ``query`` needs and a notification
                            does not carry), set by ``register_started`` in every namespace of the
                            starting connection; expires after ``STARTED_TTL_SECONDS`` (3 days)
``watchers``                the asset watcher groups that ask Agora about recordings whose ending
                            notification is lost, one member ``<delay ms>:<group>`` each, scored by
                            when one of them last ran; members older than ``STARTED_TTL_SECONDS``
                            are dropped, and the key expires that long after the last watcher ran
``backstop:<group>``        the recordings a watcher group has heard of and will ask Agora about,
                            scored by when (ms); at most 100 000, entries overdue by more than
                            ``STARTED_TTL_SECONDS`` dropped, the key expires that long after the
                            last watcher ran (``triggers.notifications``)
==========================  ======================================================================

A notification without a sid goes to the stream only. Agora sends a notification more than once
by design and on retries (``notifyMs`` changes on each resend, so it is no key). The receiver
refuses a ``notifyMs`` more than ``DEDUPE_WINDOW_SECONDS`` in the past or ``FUTURE_SKEW_SECONDS``
in the future, so a mark that lives ``MARK_TTL_SECONDS`` (their sum) outlives every replay the
receiver would still accept.

Adding is one Lua script: a duplicate by either mark writes nothing, so replicas and workers of
the API server agree without coordination. Readers skip, and log once, a stored entry they cannot
read. ``redis`` is imported on first use.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_agora._redis import RedisSettings, client_options, key_prefix

if TYPE_CHECKING:
    from airflow_provider_agora.notifications import Notification

__all__ = [
    "DEDUPE_WINDOW_SECONDS",
    "FUTURE_SKEW_SECONDS",
    "MARK_TTL_SECONDS",
    "RECORDING_MAX_NOTIFICATIONS",
    "STARTED_TTL_SECONDS",
    "STREAM_MAX_BYTES",
    "STREAM_MAX_LENGTH",
    "STREAM_TRIM_PER_ADD",
    "NotificationStore",
    "UnreadableEntries",
    "merge_oldest_first",
    "notification_keys",
    "register_started",
]

log = logging.getLogger(__name__)

#: How far in the past a ``notifyMs`` may be for the receiver to accept it.
DEDUPE_WINDOW_SECONDS = 24 * 3600
#: How far in the future a ``notifyMs`` may be for the receiver to accept it (clock skew).
FUTURE_SKEW_SECONDS = 300
#: How long the deduplication marks live: a replay is refused by the receiver before they expire.
MARK_TTL_SECONDS = DEDUPE_WINDOW_SECONDS + FUTURE_SKEW_SECONDS
#: Notifications kept per recording (the newest); a recording sends a few dozen in its life.
RECORDING_MAX_NOTIFICATIONS = 200
#: Entries kept per namespace's stream (the newest).
STREAM_MAX_LENGTH = 100_000
#: Bytes kept per namespace's stream (the newest entries): bodies may be up to 1 MiB each.
STREAM_MAX_BYTES = 256 * 1024 * 1024
#: The most stream entries one add trims, so that one call's work stays bounded; a stream over a
#: cap comes back under it within a few adds.
STREAM_TRIM_PER_ADD = 1000
#: How long a recording started through the provider stays known to the asset watchers' backstop
#: (``started:<sid>``), and how long a watcher group counts as running after its last round.
STARTED_TTL_SECONDS = 3 * 24 * 3600

# KEYS[1] - the namespace's stream
# KEYS[2] - the stream's byte counter
# KEYS[3] - the seen mark of the notification's noticeId
# KEYS[4] - the end mark of (sid, eventType); only used when ARGV[4] is "1"
# KEYS[5] - the recording's list; only used when ARGV[3] is not empty
# ARGV[1] - the notification's JSON document
# ARGV[2] - milliseconds the marks and the recording's list live
# ARGV[3] - the sid; empty: the notification goes to the stream only
# ARGV[4] - "1" if the end mark applies (an ending event with a sid), else "0"
# ARGV[5] - the stream's maximum number of entries
# ARGV[6] - the stream's maximum number of bytes
# ARGV[7] - the recording list's maximum number of notifications
# ARGV[8] - the most stream entries this call may trim
# Returns the new stream entry's id, or false for a duplicate (nothing is written then).
# An entry's size is the length of its sid plus its document, kept in its field "bytes"; the newest
# entry is never trimmed. The counter starts again from 0 when the stream is empty or missing.
_ADD = """
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
local ending = ARGV[4] == '1'
if ending and redis.call('EXISTS', KEYS[4]) == 1 then return false end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
if ending then redis.call('SET', KEYS[4], '1', 'PX', ARGV[2]) end
local size = string.len(ARGV[1]) + string.len(ARGV[3])
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('SET', KEYS[2], '0') end
local id = redis.call('XADD', KEYS[1], '*', 'sid', ARGV[3], 'notification', ARGV[1], 'bytes', size)
local bytes = redis.call('INCRBY', KEYS[2], size)
local length = redis.call('XLEN', KEYS[1])
local max_length, max_bytes, budget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[8])
local trimmed = 0
while trimmed < budget and length > 1 and (length > max_length or bytes > max_bytes) do
  local doomed = {}
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)) do
    if trimmed >= budget or length <= 1 or (length <= max_length and bytes <= max_bytes) then break end
    local fields, kept_size, counted_size = entry[2], nil, 0
    for i = 1, #fields, 2 do
      local name, value = fields[i], fields[i + 1]
      if name == 'bytes' then
        kept_size = tonumber(value)
      elseif name == 'sid' or name == 'notification' then
        counted_size = counted_size + string.len(value)
      end
    end
    doomed[#doomed + 1] = entry[1]
    bytes, length, trimmed = bytes - (kept_size or counted_size), length - 1, trimmed + 1
  end
  if #doomed == 0 then break end
  redis.call('XDEL', KEYS[1], unpack(doomed))
end
if trimmed > 0 then redis.call('SET', KEYS[2], math.max(bytes, 0)) end
if ARGV[3] ~= '' then
  redis.call('RPUSH', KEYS[5], ARGV[1])
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[7]), -1)
  redis.call('PEXPIRE', KEYS[5], ARGV[2])
end
return id
"""


def notification_keys(customer_id: str, namespace: str) -> dict[str, str]:
    """The keys of one account's notifications verified with one project's secret (``namespace``:
    ``notifications.namespace_of``)."""
    prefix = f"{key_prefix(customer_id)}:ncs:{namespace}"
    return {
        "stream": f"{prefix}:stream",
        "stream_bytes": f"{prefix}:stream:bytes",
        "seen": f"{prefix}:seen:",
        "end": f"{prefix}:end:",
        "sid": f"{prefix}:sid:",
        "fired": f"{prefix}:fired:",
        "started": f"{prefix}:started:",
        "watchers": f"{prefix}:watchers",
        "backstop": f"{prefix}:backstop:",
    }


# KEYS[i]      - the recording's registration in namespace i (``started:<sid>``), i = 1 .. n
# KEYS[n + i]  - namespace i's asset watcher groups (``watchers``)
# ARGV[1]      - the registration's JSON document
# ARGV[2]      - milliseconds the registration lives, and how long a watcher group counts as running
# ARGV[3]      - now, in ms since the epoch
# ARGV[4]      - the sid
# ARGV[4 + i]  - namespace i's prefix of the groups' pending sets (``backstop:``)
# Returns n. Each running group of each namespace gets the sid as pending, due its delay from now,
# unless it has it already. The pending sets' names are built here from the groups' names, which only
# Redis knows: they share the account's hash tag with KEYS, so they are in the same Cluster slot.
_REGISTER_STARTED = """
local n = #KEYS / 2
local ttl, now = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl)
  redis.call('ZREMRANGEBYSCORE', KEYS[n + i], '-inf', now - ttl)
  for _, member in ipairs(redis.call('ZRANGE', KEYS[n + i], 0, -1)) do
    local delay, group = string.match(member, '^(%d+):(.*)$')
    if delay then
      local pending = ARGV[4 + i] .. group
      redis.call('ZADD', pending, 'NX', now + tonumber(delay), ARGV[4])
      if redis.call('PTTL', pending) < 0 then redis.call('PEXPIRE', pending, ttl) end
    end
  end
end
return n
"""


def register_started(
    client: Any,
    customer_id: str,
    namespaces: Sequence[str],
    sid: str,
    registration: Mapping[str, object],
    *,
    now_ms: int,
) -> None:
    """Record a recording that ``AgoraHook.start`` started, in every namespace of its connection: one
    round trip (sync ``client``).

    Agora's notifications carry no ``resourceId``, and ``query`` needs it: without this record an
    asset watcher cannot ask Agora about a recording whose ending notification was lost. The
    recording also becomes pending for every asset watcher group that runs (``watchers``), so one
    whose notifications were all lost is asked about too. ``registration`` holds no secret.
    """
    keys = [notification_keys(customer_id, namespace) for namespace in namespaces]
    document = json.dumps(dict(registration), sort_keys=True, separators=(",", ":"))
    client.register_script(_REGISTER_STARTED)(
        keys=[namespace_keys["started"] + sid for namespace_keys in keys]
        + [namespace_keys["watchers"] for namespace_keys in keys],
        args=[
            document,
            STARTED_TTL_SECONDS * 1000,
            now_ms,
            sid,
            *(namespace_keys["backstop"] for namespace_keys in keys),
        ],
    )


class UnreadableEntries:
    """Reads stored notifications, skipping and logging once each one that cannot be read.

    A stored entry is only unreadable if something other than the receiver wrote it (or an older
    version did): it must cost one log line, never a reader that stops serving every other wait.
    """

    _LIMIT = 10_000  # entries remembered as reported; past that the memory starts again

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._reported: set[str] = set()

    def load(self, raw: object, where: str) -> Notification | None:
        """The notification in ``raw``, or None (logged the first time) when it cannot be read;
        ``where`` names the entry (stream entry id, or recording list) in the log line."""
        from airflow_provider_agora.notifications import NotificationError, load_stored

        if isinstance(raw, (str, bytes)):
            try:
                return load_stored(raw)
            except NotificationError as error:
                reason = str(error)
        else:
            reason = "the entry has no notification field"
        identity = where + ":" + hashlib.sha256(repr(raw).encode()).hexdigest()[:16]
        if identity not in self._reported:
            if len(self._reported) >= self._LIMIT:
                self._reported.clear()
            self._reported.add(identity)
            self._log.warning("Skipped an unreadable stored Agora notification (%s): %s", where, reason)
        return None


def merge_oldest_first(per_namespace: Iterable[Sequence[Notification]]) -> list[Notification]:
    """One recording's notifications from several namespaces' lists: by ``notifyMs`` across lists
    (each list keeps its own order), each ``noticeId`` once."""
    merged: list[Notification] = []
    seen: set[str] = set()
    for notification in heapq.merge(*per_namespace, key=lambda item: item.notify_ms):
        if notification.notice_id not in seen:
            seen.add(notification.notice_id)
            merged.append(notification)
    return merged


class NotificationStore:
    """One account's notifications in one Redis (sync: the receiver runs it in a thread pool).

    ``add`` writes into ``namespace`` (that of the secret which verified the notification);
    ``for_sid`` reads the namespaces it is given. Stores of several accounts or namespaces may share
    one ``client`` (``client_for``); a store closes only a client it opened. The bounds are
    parameters for tests.
    """

    def __init__(
        self,
        redis: RedisSettings,
        customer_id: str,
        namespace: str,
        *,
        window_seconds: int = DEDUPE_WINDOW_SECONDS,
        stream_max_length: int = STREAM_MAX_LENGTH,
        stream_max_bytes: int = STREAM_MAX_BYTES,
        recording_max_notifications: int = RECORDING_MAX_NOTIFICATIONS,
        client: Any = None,
    ) -> None:
        self.customer_id = customer_id
        self.namespace = namespace
        self.keys = notification_keys(customer_id, namespace)
        self.mark_ttl_ms = (window_seconds + FUTURE_SKEW_SECONDS) * 1000
        self.stream_max_length = stream_max_length
        self.stream_max_bytes = stream_max_bytes
        self.recording_max_notifications = recording_max_notifications
        self._owns_client = client is None
        self._client = self.client_for(redis) if client is None else client
        self._add = self._client.register_script(_ADD)
        self._unreadable = UnreadableEntries(log)

    @property
    def client(self) -> Any:
        """The (sync) Redis client this store sends with."""
        return self._client

    @staticmethod
    def client_for(redis: RedisSettings) -> Any:
        """A (sync) Redis client for ``redis``, which several stores may share."""
        import redis as redis_client

        return redis_client.Redis(**client_options(redis))

    def add(self, notification: Notification) -> str | None:
        """Store a verified notification; its stream id, or None when it is a duplicate."""
        from airflow_provider_agora.notifications import ENDING_EVENT_TYPES

        sid = notification.sid or ""
        ending = notification.event_type in ENDING_EVENT_TYPES and bool(sid)
        keys = [
            self.keys["stream"],
            self.keys["stream_bytes"],
            self.keys["seen"] + notification.notice_id,
            self.keys["end"] + f"{sid}:{notification.event_type}",
            self.keys["sid"] + sid,
        ]
        document = json.dumps(notification.to_json(), sort_keys=True, separators=(",", ":"))
        args: list[str | int] = [
            document,
            self.mark_ttl_ms,
            sid,
            "1" if ending else "0",
            self.stream_max_length,
            self.stream_max_bytes,
            self.recording_max_notifications,
            STREAM_TRIM_PER_ADD,
        ]
        stored: Any = self._add(keys=keys, args=args)
        if not stored:
            return None
        return stored.decode() if isinstance(stored, bytes) else str(stored)

    def for_sid(self, sid: str, namespaces: Sequence[str] | None = None) -> list[Notification]:
        """Every stored notification of one recording in ``namespaces`` (default: this store's),
        oldest first, each ``noticeId`` once; one round trip. Unreadable entries are skipped."""
        chosen = tuple(namespaces) if namespaces is not None else (self.namespace,)
        pipeline = self._client.pipeline(transaction=False)
        for namespace in chosen:
            pipeline.lrange(notification_keys(self.customer_id, namespace)["sid"] + sid, 0, -1)
        per_namespace: list[list[Notification]] = []
        for namespace, raws in zip(chosen, pipeline.execute(), strict=True):
            where = f"recording sid={sid!r} in namespace {namespace}"
            loaded = (self._unreadable.load(raw, where) for raw in raws)
            per_namespace.append([notification for notification in loaded if notification is not None])
        return merge_oldest_first(per_namespace)

    def close(self) -> None:
        """Close the Redis client, unless it was given (shared with other stores)."""
        if self._owns_client:
            self._client.close()
