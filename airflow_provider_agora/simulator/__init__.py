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
"""

from airflow_provider_agora.simulator._counting import max_in_sliding_second
from airflow_provider_agora.simulator._faults import Faults
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

__all__ = [
    "ABNORMAL_HOLD",
    "ABNORMAL_STATUS",
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
    "max_in_sliding_second",
]
