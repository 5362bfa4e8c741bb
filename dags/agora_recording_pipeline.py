"""Record a channel with Agora Cloud Recording, then build a manifest of the recording's files.

start_recording -> wait_until_recording (status 5) -> stop_recording -> wait_for_end -> build_manifest

Storage credentials come from the ``recording_storage`` connection (login = access key,
password = secret key, extra ``bucket``), never from this file; the provider masks them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_agora.operators.agora import AgoraStartRecordingOperator, AgoraStopRecordingOperator
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor

with DAG(
    dag_id="agora_recording_pipeline",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"cname": "airflow-demo", "uid": 527841},
    tags=["agora", "example"],
    doc_md=__doc__,
):
    start = AgoraStartRecordingOperator(
        task_id="start_recording",
        cname="{{ params.cname }}",
        uid="{{ params.uid }}",
        recording_mode="mix",
        client_request={
            "recordingConfig": {"channelType": 0, "streamTypes": 2, "maxIdleTime": 300},
            "recordingFileConfig": {"avFileType": ["hls", "mp4"]},
            "storageConfig": {
                "vendor": 1,  # Amazon S3
                "region": 0,
                "bucket": "{{ conn.recording_storage.extra_dejson.bucket }}",
                "accessKey": "{{ conn.recording_storage.login }}",
                "secretKey": "{{ conn.recording_storage.password }}",
                "fileNamePrefix": ["recordings", "{{ ds_nodash }}"],
            },
        },
    )

    # Agora's own start check: status 4 or 5 means the recording really started.
    recording = AgoraRecordingQuerySensor(
        task_id="wait_until_recording",
        resource_id=start.output["resource_id"],
        sid=start.output["sid"],
        recording_mode="mix",
        target_status=5,
        poke_interval=2,
        timeout=120,
    )

    stop = AgoraStopRecordingOperator(
        task_id="stop_recording",
        resource_id=start.output["resource_id"],
        sid=start.output["sid"],
        recording_mode="mix",
        cname=start.output["cname"],
        uid=start.output["uid"],
    )

    # After a stop Agora winds the session down (statuses 6-8) and then forgets it (404), maybe
    # before this task's first poke: known_to_have_run says a lasting 404 is then the end too.
    ended = AgoraRecordingQuerySensor(
        task_id="wait_for_end",
        resource_id=start.output["resource_id"],
        sid=start.output["sid"],
        recording_mode="mix",
        target_status=8,
        on_not_found="succeed",
        not_found_grace_period=5,
        known_to_have_run=True,
        poke_interval=1,
        timeout=120,
    )

    @task
    def build_manifest(sid: str, stopped_files: list[dict[str, Any]], last_files: list[dict[str, Any]]) -> str:
        from recording_manifest import build_manifest, merge_file_lists, write_manifest

        manifest = build_manifest(sid, merge_file_lists(stopped_files, last_files))
        path = write_manifest(manifest)
        print(f"Manifest of recording {sid} written to {path}")
        return path

    recording >> stop >> ended
    build_manifest(start.output["sid"], stop.output["files"], ended.output["files"])
