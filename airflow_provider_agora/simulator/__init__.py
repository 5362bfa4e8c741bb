"""Local stand-in for Agora's Cloud Recording REST API (standard library only).

Start it in-process (``AgoraSimulator(...).start()``) or as a separate process
(``python -m airflow_provider_agora.simulator --port 8089``) and point the Agora connection's host
at ``sim.url``. Paths, bodies, status values and error shapes follow Agora's documentation; the
recording lifecycle runs on a clock scaled by ``speed`` (see :data:`STARTUP_TIMELINE`).
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
from airflow_provider_agora.simulator._server import AgoraSimulator, RequestRecord

__all__ = [
    "ABNORMAL_HOLD",
    "ABNORMAL_STATUS",
    "DEFAULT_MAX_IDLE_TIME",
    "EXIT_DURATION",
    "EXIT_TIMELINE",
    "RESOURCE_TTL",
    "SIMULATED_USERS",
    "SLICE_INTERVAL",
    "STARTUP_TIMELINE",
    "AgoraSimulator",
    "Faults",
    "RequestRecord",
    "max_in_sliding_second",
]
