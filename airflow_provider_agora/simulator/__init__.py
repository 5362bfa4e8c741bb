"""Local stand-in for Agora's Cloud Recording REST API (standard library only).

Start it in-process (``AgoraSimulator(...).start()``) or as a separate process
(``python -m airflow_provider_agora.simulator --port 8089``) and point the Agora connection's host
at ``sim.url``. Paths, bodies, status values and error shapes follow Agora's documentation; the
recording lifecycle runs on a clock scaled by ``speed`` (see :data:`STARTUP_TIMELINE`).

Notifications (Agora's Notification Center Service): ``AgoraSimulator(notify_url=..., notify_secret=...)``
(CLI: ``--notify-url``, ``--notify-secret``; ``notify_timeout`` / ``--notify-timeout``, default 10 real
seconds) makes the simulator POST Agora's signed envelope (``Agora-Signature``: hex HMAC-SHA1,
``Agora-Signature-V2``: hex HMAC-SHA256, both over the raw body) for each lifecycle event when the
simulated clock reaches it: 40 when the recorder is ready; at a normal end (``stop``, idle exit after
``maxIdleTime``, a bulk recording's end time) 30, then 31 with the final ``fileList`` (MP4 files
included, which ``query`` never shows), then 11 ``exitStatus`` 0; web recordings also 70 and 71 (with
its ``fileList``; their 31 has none); an abnormal exit (fault) 1 and 11 ``exitStatus`` 1; a fail-over
(``transient_not_found`` fault) 12 with ``newUid``. Anything but a 200 is resent up to three times
after :data:`NOTIFY_RETRY_DELAYS` simulated seconds, then dropped. Every attempt is in
``AgoraSimulator.notifications`` (:class:`NotificationRecord`; ``GET /_simulator/notifications``) and
counted in ``notification_stats()`` (``GET /_simulator/notifications/stats``). Notification faults
on ``AgoraSimulator.faults`` (also ``POST /_simulator/faults``): ``duplicate``,
``reorder_31_after_11``, ``bad_signature``, ``backuped`` (32 after 31), ``redeliver`` (each again under
a new ``noticeId``) (switches) and ``drop`` (by count and/or eventType).

Recording files (``_storage``): a recording whose ``clientRequest.storageConfig`` has ``vendor`` 11
(S3-compatible) and ``extensionParams.endpoint`` (``http://127.0.0.1:PORT``, or a bare host meaning
https) gets its files uploaded to ``bucket`` with ``accessKey``/``secretKey`` (boto3 is imported
then, not before), named as ``query``/``stop``/31 name them (``fileNamePrefix`` in front): TS
segments ``<sid>_<cname>_<utc>.ts`` every :data:`SLICE_INTERVAL` simulated seconds from the first
slice, the playlist ``<sid>_<cname>.m3u8`` rewritten after each (``#EXT-X-ENDLIST`` once the
recording has ended normally), and ``<sid>_<cname>_0.mp4`` at the end when ``avFileType`` has
``mp4``. A background thread writes what is due on the simulated clock; ``storage_idle(timeout)``
and ``wait_uploaded(sid, timeout)`` wait until everything due at the moment of the call is written,
``uploads()`` (``GET /_simulator/uploads``) lists every attempt. A refused upload is reported as
Agora does (NCS event 1, ``module`` 1, ``errorCode`` 32). Storage faults: ``missing_segment``,
``late_upload``, ``unfinished_playlist``, ``wrong_storage_credentials``; ``backuped`` holds a
recording's files back until ``backup_delay`` (:data:`BACKUP_DELAY`) simulated seconds after its end.
Nothing is uploaded without vendor 11 and an endpoint.
"""

from airflow_provider_agora.simulator._counting import max_in_sliding_second
from airflow_provider_agora.simulator._faults import BACKUP_DELAY, Faults, StorageFaults
from airflow_provider_agora.simulator._lifecycle import (
    ABNORMAL_HOLD,
    ABNORMAL_STATUS,
    DEFAULT_MAX_IDLE_TIME,
    EXIT_DURATION,
    EXIT_TIMELINE,
    RESOURCE_TTL,
    SIMULATED_USERS,
    SLICE_INTERVAL,
    STARTUP_TIMELINE,
)
from airflow_provider_agora.simulator._notify import (
    NOTIFY_RETRY_DELAYS,
    NOTIFY_TIMEOUT,
    NotificationRecord,
)
from airflow_provider_agora.simulator._server import AgoraSimulator, RequestRecord
from airflow_provider_agora.simulator._storage import S3Target, UploadRecord, storage_target

__all__ = [
    "ABNORMAL_HOLD",
    "ABNORMAL_STATUS",
    "BACKUP_DELAY",
    "DEFAULT_MAX_IDLE_TIME",
    "EXIT_DURATION",
    "EXIT_TIMELINE",
    "NOTIFY_RETRY_DELAYS",
    "NOTIFY_TIMEOUT",
    "RESOURCE_TTL",
    "SIMULATED_USERS",
    "SLICE_INTERVAL",
    "STARTUP_TIMELINE",
    "AgoraSimulator",
    "Faults",
    "NotificationRecord",
    "RequestRecord",
    "S3Target",
    "StorageFaults",
    "UploadRecord",
    "max_in_sliding_second",
    "storage_target",
]
