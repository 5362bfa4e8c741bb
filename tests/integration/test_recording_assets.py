"""A DAG scheduled on the recordings' asset runs once per finished recording, with its files, in a
real Airflow 3.3 (API server, scheduler, DAG processor, LocalExecutor on PostgreSQL).

The example DAGs as a user deploys them: ``agora_recording_to_storage`` records into a real
S3-compatible server (moto's), its ``wait_for_end`` verifies the files there and announces the
recording on ``Asset("s3://demo-recordings/recordings")``; ``agora_process_recording_files`` is
scheduled on that asset and reads each playlist from the bucket named in the event's extra.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import airflow
import pytest

if not airflow.__version__.startswith("3."):
    pytest.skip("Assets with extras and asset-scheduled DAGs as tested here are Airflow 3's", allow_module_level=True)
pytest.importorskip("httpx", reason="httpx (a core dependency of Airflow) is needed to call the REST API")
pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")
pytest.importorskip("s3fs", reason="the s3 extra is not installed (pip install -e '.[test]')")

from airflow_provider_agora.simulator import AgoraSimulator
from tests.integration.airflow_cluster import ROOT, Cluster, cluster_env, running_cluster
from tests.storage_server import S3Server, running_s3_server
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, connection_json, free_port

PRODUCER = "agora_recording_to_storage"
CONSUMER = "agora_process_recording_files"
BUCKET = "demo-recordings"
EXAMPLE_FILES = ("agora_recording_pipeline.py", "agora_process_recording_files.py", "recording_manifest.py")
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3_server() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, s3: S3Server, postgres_database_url: str) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("airflow-assets-home")
    dags = home / "dags"
    dags.mkdir()
    for name in EXAMPLE_FILES:
        shutil.copy(ROOT / "dags" / name, dags / name)
    # A quarter of real time: a stopped recording shows 6, 7 and 8 for 12 s, so wait_for_end, which a
    # LocalExecutor starts a few seconds after the stop, sees it with its files before it is gone.
    simulator = AgoraSimulator(
        customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,), speed=0.25
    ).start()
    storage = {"bucket": BUCKET, "endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}
    try:
        env = cluster_env(
            home,
            api_port=free_port(),
            database_url=postgres_database_url,
            dags_folder=dags,
            AGORA_MANIFEST_DIR=str(home / "manifests"),
            AIRFLOW_CONN_AGORA_DEFAULT=connection_json(simulator.url),
            AIRFLOW_CONN_RECORDING_STORAGE=json.dumps(
                {"conn_type": "aws", "login": "AKIAASSETSTEST", "password": "assets-test-secret", "extra": storage}
            ),
        )
        with running_cluster(home, env, simulator, triggerers=[], dag_ids=[PRODUCER, CONSUMER]) as airflow:
            yield airflow
    finally:
        simulator.stop()


def consumer_runs(cluster: Cluster) -> list[dict[str, Any]]:
    answer = cluster.get_json(f"/api/v2/dags/{CONSUMER}/dagRuns?order_by=logical_date")
    return list(answer["dag_runs"]) if answer else []


def xcom(cluster: Cluster, dag_id: str, run_id: str, task_id: str) -> Any:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
    answer = cluster.get_json(path)
    assert answer is not None, f"no XCom of {dag_id}.{task_id} in run {run_id}\n{cluster.diagnostics()}"
    return answer["value"]


def record(cluster: Cluster, cname: str) -> dict[str, Any]:
    """One run of the producer, to success; what its wait_for_end handed over."""
    run_id = cluster.trigger({"cname": cname}, dag_id=PRODUCER)
    cluster.wait_for(f"{PRODUCER} to finish", lambda: cluster.run_state(run_id) in ("success", "failed"), RUN_TIMEOUT)
    assert cluster.run_state(run_id) == "success", cluster.diagnostics()
    return dict(xcom(cluster, PRODUCER, run_id, "wait_for_end"))


def test_the_asset_scheduled_dag_runs_once_per_finished_recording_with_its_files(
    cluster: Cluster, s3: S3Server
) -> None:
    processed = []
    for number, cname in enumerate(("asset-room-1", "asset-room-2"), start=1):
        ended = record(cluster, cname)
        assert ended["verified_in_storage"] is True

        def consumer_finished(count: int = number) -> bool:
            runs = consumer_runs(cluster)
            return len(runs) >= count and runs[count - 1]["state"] in ("success", "failed")

        cluster.wait_for(f"{CONSUMER} run {number}", consumer_finished, RUN_TIMEOUT)
        run = consumer_runs(cluster)[number - 1]
        assert run["state"] == "success", cluster.diagnostics()
        read = xcom(cluster, CONSUMER, run["dag_run_id"], "read_playlists")
        playlist = next(item["key"] for item in ended["files"] if item["fileName"].endswith(".m3u8"))
        segments = [key for key in s3.keys(BUCKET) if key.startswith(playlist[: -len(".m3u8")]) and key.endswith(".ts")]
        assert read == [{"sid": ended["sid"], "key": playlist, "segments": len(segments)}]
        processed.append(ended["sid"])
    assert len(consumer_runs(cluster)) == 2  # once per recording: no duplicate run
    assert len(set(processed)) == 2
