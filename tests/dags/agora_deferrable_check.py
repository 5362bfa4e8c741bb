"""Test DAG: one deferrable sensor, parameters from the run's conf."""

from __future__ import annotations

from datetime import datetime

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor

with DAG(
    dag_id="agora_deferrable_check",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"resource_id": "", "sid": "", "target_status": 8, "grace": 3, "on_not_found": "fail", "timeout": 60},
):
    AgoraRecordingQuerySensor(
        task_id="wait",
        resource_id="{{ params.resource_id }}",
        sid="{{ params.sid }}",
        recording_mode="mix",
        target_status="{{ params.target_status }}",
        not_found_grace_period="{{ params.grace }}",
        on_not_found="{{ params.on_not_found }}",
        deferrable=True,
        poke_interval=1,
        timeout=60,
    )


with DAG(
    dag_id="agora_deferrable_timeout_check",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"resource_id": "", "sid": "", "target_status": 8},
):
    AgoraRecordingQuerySensor(
        task_id="wait",
        resource_id="{{ params.resource_id }}",
        sid="{{ params.sid }}",
        recording_mode="mix",
        target_status="{{ params.target_status }}",
        deferrable=True,
        poke_interval=1,
        timeout=6,
        retries=2,  # a sensor timeout must fail the task without using them
    )
