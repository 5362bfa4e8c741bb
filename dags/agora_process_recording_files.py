"""Process each recording whose files are in the bucket, scheduled on the recordings' asset.

``agora_recording_to_storage``'s ``wait_for_end`` succeeds once every file of a recording is in the
bucket and complete, and announces it on the ``RECORDINGS`` asset (``s3://demo-recordings/recordings``)
with the recording in the event's extra: ``sid``, and ``files`` with their ``uri``. This DAG runs
once per such event and reads each playlist from the bucket through ``ObjectStoragePath``, bound to
the ``recording_storage`` connection. One run may carry several recordings that finished close
together: it handles every event it was given.
"""

from __future__ import annotations

from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, Asset, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task

STORAGE_CONN_ID = "recording_storage"  # type aws: for S3-compatible storage with endpoint_url
#: Where agora_recording_to_storage's recordings land: DAGs scheduled on it run once per recording.
RECORDINGS = Asset("s3://demo-recordings/recordings")


with DAG(dag_id="agora_process_recording_files", schedule=[RECORDINGS], tags=["agora", "example"], doc_md=__doc__):

    @task
    def read_playlists(**context: Any) -> list[dict[str, Any]]:
        from airflow_provider_agora.storage import read_playlist, recording_paths

        events = context.get("triggering_asset_events") or context.get("triggering_dataset_events") or {}
        read = []
        for asset_events in events.values():
            for event in asset_events:
                recording = event.extra
                for path in recording_paths(recording, STORAGE_CONN_ID, suffix=".m3u8"):
                    playlist = read_playlist(path)
                    print(
                        f"Recording sid={recording['sid']}: {path.key} has {playlist.segment_count} segment(s), "
                        f"{playlist.duration:.1f} s."
                    )
                    read.append({"sid": recording["sid"], "key": path.key, "segments": playlist.segment_count})
        return read

    read_playlists()
