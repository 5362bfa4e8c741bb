"""Process every recording that finishes, with no sensor and no polling (Airflow 3).

Agora's notifications reach the API server's receiver (``/agora/ncs/agora_default``), which keeps
them in Redis; ``AgoraRecordingNotificationTrigger`` turns each finished recording into one event
of the ``agora_finished_recordings`` asset, and this DAG runs for it. One run may carry several
recordings that finished close together: it handles every event it was given.

Needs the ``agora_default`` connection with ``ncs_secret`` and ``redis_conn_id``. Airflow 2 has no
asset watchers: there this file defines no DAG.
"""

from __future__ import annotations

from typing import Any

try:
    from airflow.sdk import DAG, Asset, AssetWatcher, task

    from airflow_provider_agora.triggers.notifications import AgoraRecordingNotificationTrigger
except ImportError:  # Airflow 2.11
    DAG = None

if DAG is not None:
    finished_recordings = Asset(
        "agora_finished_recordings",
        watchers=[AssetWatcher(name="agora_notifications", trigger=AgoraRecordingNotificationTrigger())],
    )

    with DAG(dag_id="agora_process_finished_recordings", schedule=[finished_recordings], tags=["agora", "example"]):

        @task
        def list_files(**context: Any) -> list[dict[str, Any]]:
            recordings = []
            for events in context["triggering_asset_events"].values():
                for event in events:
                    result = event.extra["payload"]
                    print(f"Recording sid={result['sid']} finished with {len(result['files'])} file(s).")
                    recordings.append({"sid": result["sid"], "files": result["files"]})
            return recordings

        list_files()
