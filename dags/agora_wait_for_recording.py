"""Wait for a recording that something else started, then build the manifest of its files.

Trigger with the recording's identifiers, for example:
``airflow dags trigger agora_wait_for_recording --conf '{"resource_id": "...", "sid": "...", "recording_mode": "mix"}'``

The sensor runs in reschedule mode: it frees its worker slot between pokes, which suits a
recording that lasts hours. A recording that ends normally disappears from Agora (404), so
``on_not_found="succeed"`` returns the last file list seen once the 404 outlasts Agora's
90-second fail-over window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models.param import Param

from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor

with DAG(
    dag_id="agora_wait_for_recording",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "resource_id": Param("", type="string", description="resourceId returned by acquire"),
        "sid": Param("", type="string", description="sid returned by start"),
        "recording_mode": Param("mix", enum=["individual", "mix", "web"]),
        "target_status": Param(8, type="integer", minimum=0, maximum=8, description="8 = exited"),
        "not_found_grace_period": Param(90, type="number", minimum=0),
    },
    tags=["agora", "example"],
    doc_md=__doc__,
):
    ended = AgoraRecordingQuerySensor(
        task_id="wait_for_recording_end",
        resource_id="{{ params.resource_id }}",
        sid="{{ params.sid }}",
        recording_mode="{{ params.recording_mode }}",
        target_status="{{ params.target_status }}",
        on_not_found="succeed",
        not_found_grace_period="{{ params.not_found_grace_period }}",
        mode="reschedule",
        poke_interval=60,
        timeout=24 * 3600,
    )

    @task
    def build_manifest(result: dict[str, Any]) -> str:
        from recording_manifest import build_manifest, write_manifest

        path = write_manifest(build_manifest(result["sid"], result["files"]))
        print(f"Recording {result['sid']} ended by {result['ended_by']}; manifest written to {path}")
        return path

    build_manifest(ended.output)
