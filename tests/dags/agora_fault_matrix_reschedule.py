"""Test DAG for the fault matrix: a reschedule-mode sensor whose wait never ends, in a real Airflow.

``tests/integration/test_fault_matrix.py`` runs it with ``airflow dags test`` against a server that
answers 503 forever, and reads from the metadata database how Airflow ended the task. The sensor's
``timeout`` comes from ``AGORA_FAULT_MATRIX_TIMEOUT``; its hook retries fast, so each reschedule is
short. ``retries=2`` shows that the timeout fails the task without a retry.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from functools import cached_property

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

from airflow_provider_agora.hooks.agora import AgoraHook, RetryPolicy
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor


class FastRetryingSensor(AgoraRecordingQuerySensor):
    """The provider's sensor with the fault matrix's fast retry policy (the default waits 1-8 s)."""

    @cached_property
    def hook(self) -> AgoraHook:
        return AgoraHook(
            self.agora_conn_id,
            retry_policy=RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.05, max_total_seconds=5),
        )


with DAG(
    dag_id="agora_fault_matrix_reschedule",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
):
    FastRetryingSensor(
        task_id="wait",
        resource_id="rid",
        sid="38f8e3cfdc474cd56fc1ceba380d7e1a",
        target_status=5,
        mode="reschedule",
        poke_interval=0.2,
        timeout=float(os.environ.get("AGORA_FAULT_MATRIX_TIMEOUT", "3")),
        retries=2,
        retry_delay=timedelta(seconds=0),
    )
