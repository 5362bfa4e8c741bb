"""Record a channel with Agora Cloud Recording, then build a manifest of the recording's files.

start_recording -> wait_until_recording (status 5) -> stop_recording -> wait_for_end -> build_manifest

Two pipelines, one shape:
- ``agora_recording_pipeline``: files go to Amazon S3 (vendor 1); the manifest gives each file's
  ``s3://`` URI. Nothing reads the bucket.
- ``agora_recording_to_storage``: files go to an S3-compatible store (vendor 11, the endpoint of the
  ``recording_storage`` connection); ``wait_for_end`` succeeds only once every file is in the bucket
  and complete (``verify_in_storage``), announces the recording on the ``RECORDINGS`` asset, and
  ``read_playlists`` opens each playlist from the bucket through ``ObjectStoragePath``.

Storage credentials come from the ``recording_storage`` connection (type ``aws``: login = access key,
password = secret key, extra ``bucket`` and, for S3-compatible storage, ``endpoint_url``), never from
this file; the provider masks them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, Asset, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task


from airflow_provider_agora.operators.agora import AgoraStartRecordingOperator, AgoraStopRecordingOperator
from airflow_provider_agora.sensors.agora import AgoraRecordingQuerySensor

STORAGE_CONN_ID = "recording_storage"  # type aws: for S3-compatible storage with endpoint_url
#: Where agora_recording_to_storage's recordings land: DAGs scheduled on it run once per recording.
RECORDINGS = Asset("s3://demo-recordings/recordings")


def storage_config(vendor: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "vendor": vendor,  # 1: Amazon S3; 11: S3-compatible, at extensionParams.endpoint
        "region": 0,
        "bucket": "{{ conn.recording_storage.extra_dejson.bucket }}",
        "accessKey": "{{ conn.recording_storage.login }}",
        "secretKey": "{{ conn.recording_storage.password }}",
        # The run's day: its logical date, or, for a run triggered without one (Airflow 3's REST API
        # and UI), when it was due to run. Agora allows only letters and digits in a prefix.
        "fileNamePrefix": ["recordings", "{{ (dag_run.logical_date or dag_run.run_after).strftime('%Y%m%d') }}"],
    }
    if vendor == 11:
        config["extensionParams"] = {"endpoint": "{{ conn.recording_storage.extra_dejson.endpoint_url }}"}
    return config


def recording_pipeline(dag_id: str, *, vendor: int, verify_in_storage: bool) -> None:
    with DAG(
        dag_id=dag_id,
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
                "storageConfig": storage_config(vendor),
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
            storage=start.output["storage"],  # each file of the result gets its uri
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
            storage=start.output["storage"],
            verify_in_storage=verify_in_storage,
            storage_conn_id=STORAGE_CONN_ID,
            storage_grace_period=60,
            outlets=[RECORDINGS] if verify_in_storage else [],
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

        if verify_in_storage:

            @task
            def read_playlists(stopped: dict[str, Any]) -> list[dict[str, Any]]:
                """A downstream task that uses the files where they are: each playlist, from the bucket."""
                from recording_manifest import write_playlists

                from airflow_provider_agora.storage import read_playlist, recording_paths

                summaries = []
                for path in recording_paths(stopped, STORAGE_CONN_ID, suffix=".m3u8"):
                    playlist = read_playlist(path)
                    summaries.append(
                        {
                            "key": path.key,
                            "segments": playlist.segment_count,
                            "duration_seconds": round(playlist.duration, 3),
                            "finished": playlist.ended,
                        }
                    )
                    print(f"{path.key}: {playlist.segment_count} segment(s), {playlist.duration:.1f} s")
                print(f"Playlists read from the bucket: {write_playlists(stopped['sid'], summaries)}")
                return summaries

            ended >> read_playlists(stop.output)


recording_pipeline("agora_recording_pipeline", vendor=1, verify_in_storage=False)
recording_pipeline("agora_recording_to_storage", vendor=11, verify_in_storage=True)
