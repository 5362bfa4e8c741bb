"""Test DAGs for waits on Agora's notifications in a real Airflow 3.

Used by tests/integration/test_notifications_in_airflow.py (its own DAG folder: other clusters do
not parse them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor
from airflow_provider_agora.triggers.notifications import AgoraRecordingNotificationTrigger

with DAG(
    dag_id="agora_notification_wait_check",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"resource_id": "", "sid": ""},
):
    AgoraRecordingQuerySensor(
        task_id="wait",
        resource_id="{{ params.resource_id }}",
        sid="{{ params.sid }}",
        recording_mode="mix",
        deferrable=True,
        poke_interval=600,  # only a notification can end this wait within the test's time
        timeout=300,
    )

finished = Asset(
    "agora_finished_recordings_check",
    watchers=[AssetWatcher(name="agora_notifications_check", trigger=AgoraRecordingNotificationTrigger())],
)

with DAG(dag_id="agora_finished_recordings_check", schedule=[finished], start_date=datetime(2026, 1, 1)):

    @task
    def finished_recordings(**context: Any) -> list[dict[str, Any]]:
        return [
            {"sid": event.extra["payload"]["sid"], "files": event.extra["payload"]["files"]}
            for events in context["triggering_asset_events"].values()
            for event in events
        ]

    finished_recordings()
