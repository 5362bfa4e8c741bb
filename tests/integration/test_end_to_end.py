"""The provider inside a real Airflow (``airflow dags test`` on SQLite) against the simulator."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import airflow
import pytest

from airflow_provider_agora.simulator import AgoraSimulator
from tests.support import (
    APP_ID,
    CUSTOMER_ID,
    CUSTOMER_SECRET,
    connection_json,
    running_recording,
    start_recording,
    stop,
)

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
STORAGE_ACCESS_KEY = "AKIAE2ETESTACCESSKEY"
STORAGE_SECRET_KEY = "e2e-storage-secret-Yv3q"
SECRETS = {
    "customer secret": CUSTOMER_SECRET,
    "basic token": base64.b64encode(f"{CUSTOMER_ID}:{CUSTOMER_SECRET}".encode()).decode(),
    "storage access key": STORAGE_ACCESS_KEY,
    "storage secret key": STORAGE_SECRET_KEY,
}


def _has_task_state_store() -> bool:
    try:
        from airflow.sdk.execution_time.context import TaskStateStoreAccessor  # noqa: F401
    except ImportError:
        return False
    return True


# Airflow 3.3+: what a reschedule-mode sensor saw survives its reschedules.
HAS_TASK_STATE_STORE = _has_task_state_store()
# Airflow 3 and 2 differ in what `dags test` logs (the masker's messages, the log line format).
AIRFLOW_3 = int(airflow.__version__.split(".")[0]) >= 3


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    return home


@pytest.fixture(scope="module")
def e2e_simulator() -> Iterator[AgoraSimulator]:
    with AgoraSimulator(customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,)).start() as sim:
        yield sim


def dags_test(
    home: Path,
    sim: AgoraSimulator,
    dag_id: str,
    *,
    dags: Path,
    conf: dict[str, Any] | None = None,
    debug: bool = False,
    storage: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AGORA_MANIFEST_DIR": str(home / "manifests"),
        "AIRFLOW_CONN_AGORA_DEFAULT": connection_json(sim.url),
        "AIRFLOW_CONN_RECORDING_STORAGE": json.dumps(
            {
                "conn_type": "aws",
                "login": STORAGE_ACCESS_KEY,
                "password": STORAGE_SECRET_KEY,
                "extra": storage or {"bucket": "b"},
            }
        ),
    }
    if debug:
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "DEBUG"
    env.update(extra_env or {})
    command = [AIRFLOW, "dags", "test", dag_id]
    if conf is not None:
        command += ["-c", json.dumps(conf)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


def xcom(home: Path, dag_id: str, task_id: str, key: str = "return_value") -> Any:
    with sqlite3.connect(home / "airflow.db") as db:
        (value,) = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ? ORDER BY timestamp DESC LIMIT 1",
            (dag_id, task_id, key),
        ).fetchone()
    # Airflow 3 stores JSON text; Airflow 2 stores JSON as bytes.
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def after_queries(sim: AgoraSimulator, sid: str, count: int, then: Callable[[], object]) -> threading.Thread:
    """In a thread: once the simulator has answered ``count`` queries of ``sid`` with 200, call ``then``."""

    def watch() -> None:
        deadline = time.monotonic() + 240  # only bounds a failing test
        while (
            sum(1 for r in sim.request_log if r.path.endswith(f"/sid/{sid}/mode/mix/query") and r.status == 200) < count
        ):
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        then()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_example_pipeline_runs_to_success_without_leaking_a_secret(
    airflow_home: Path, e2e_simulator: AgoraSimulator
) -> None:
    run = dags_test(airflow_home, e2e_simulator, "agora_recording_pipeline", dags=ROOT / "dags", debug=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    stopped = xcom(airflow_home, "agora_recording_pipeline", "stop_recording")
    assert stopped["uploading_status"] == "uploaded"
    assert xcom(airflow_home, "agora_recording_pipeline", "stop_recording", key="files") == stopped["files"]
    manifest = json.loads(Path(xcom(airflow_home, "agora_recording_pipeline", "build_manifest")).read_text())
    assert manifest["sid"] == stopped["sid"]
    assert manifest["file_count"] == 2  # the m3u8 and the mp4

    # Every place a secret could land: the run's output at DEBUG, task logs, XCom, rendered fields.
    # Airflow's `dags test` harness (InProcessSupervisorComms.send, Airflow 3.3.2) logs every
    # MaskSecret message with its value at DEBUG; real workers omit that body. Those harness lines
    # are set aside, and they show that each secret was handed to the masker.
    harness = [line for line in run.stdout.splitlines() if "msg=MaskSecret(" in line]
    masked = [name for name, secret in SECRETS.items() if any(secret in line for line in harness)]
    if AIRFLOW_3:  # the harness lines must be there: without them nothing shows the masker was used
        assert harness, "no MaskSecret line in the DEBUG output of Airflow 3's `dags test`"
        assert sorted(masked) == sorted(SECRETS)
    else:  # Airflow 2 has no such harness
        assert harness == []
    output = "\n".join(line for line in (run.stdout + run.stderr).splitlines() if "msg=MaskSecret(" not in line)
    places = {"dags test output": output}
    for path in (airflow_home / "logs").rglob("*") if (airflow_home / "logs").exists() else []:
        if path.is_file():
            places[str(path)] = path.read_text(errors="replace")
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        places["xcom"] = "\n".join(str(row) for row in db.execute("SELECT key, value FROM xcom"))
        places["rendered fields"] = "\n".join(
            str(row) for row in db.execute("SELECT task_id, rendered_fields FROM rendered_task_instance_fields")
        )
    assert "storageConfig" in places["rendered fields"]  # the search does look at the start task's fields
    assert ("[debug" if AIRFLOW_3 else "} DEBUG - ") in output  # DEBUG logging was really on
    leaks = [(name, where) for name, secret in SECRETS.items() for where, text in places.items() if secret in text]
    assert leaks == []


def test_waiting_on_a_recording_started_elsewhere(airflow_home: Path, e2e_simulator: AgoraSimulator) -> None:
    recording = start_recording(e2e_simulator, uid=101)
    run = dags_test(
        airflow_home,
        e2e_simulator,
        "agora_wait_for_recording",
        dags=ROOT / "dags",
        conf={**recording, "target_status": 5},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = xcom(airflow_home, "agora_wait_for_recording", "wait_for_recording_end")
    assert (result["sid"], result["status"], result["ended_by"]) == (recording["sid"], 5, "status")
    manifest = json.loads(Path(xcom(airflow_home, "agora_wait_for_recording", "build_manifest")).read_text())
    assert manifest["files_by_uid"]["0"][0]["fileName"] == f"{recording['sid']}_e2e-room.m3u8"


def test_reschedule_mode_keeps_the_404_grace_clock(airflow_home: Path, e2e_simulator: AgoraSimulator) -> None:
    e2e_simulator.clear_request_log()
    unknown = {"resource_id": "no-such-resource", "sid": "f" * 32, "grace": 3}
    run = dags_test(airflow_home, e2e_simulator, "agora_reschedule_check", dags=ROOT / "tests" / "dags", conf=unknown)
    output = run.stdout + run.stderr
    assert run.returncode == 1
    # Failed by the grace rule (the clock survived the reschedules), not by the 60 s sensor timeout.
    assert "past not_found_grace_period=3 s" in output
    queries = [r for r in e2e_simulator.request_log if r.path.endswith("/query")]
    # The first 404 starts the clock, a later poke fails on it; more pokes fit in 3 s on an idle machine.
    assert len(queries) >= 2
    assert {r.status for r in queries} == {404}


def run_that_sees_a_recording_vanish(airflow_home: Path, sim: AgoraSimulator) -> tuple[str, Any]:
    """``agora_reschedule_check`` with ``on_not_found="succeed"`` on a recording that vanishes once a
    poke has seen it in progress. Agora often answers a recording that ended normally with 404
    instead of 8: this one shows 6 for half a second after its stop, then is gone, so the DAG's
    target status 8 can never be reached."""
    recording = running_recording(sim, hold=0.5)
    sid = recording["sid"]
    stopper = after_queries(sim, sid, 1, lambda: stop(sim, recording))  # once a poke has seen it
    conf = {"resource_id": recording["resource_id"], "sid": sid, "grace": 2, "on_not_found": "succeed"}
    run = dags_test(airflow_home, sim, "agora_reschedule_check", dags=ROOT / "tests" / "dags", conf=conf)
    stopper.join(10)
    return sid, run


@pytest.mark.skipif(not HAS_TASK_STATE_STORE, reason="needs Airflow 3.3's task state store (see the next test)")
def test_reschedule_mode_succeeds_with_the_last_files_when_the_session_vanishes(
    airflow_home: Path, e2e_simulator: AgoraSimulator
) -> None:
    sid, run = run_that_sees_a_recording_vanish(airflow_home, e2e_simulator)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = xcom(airflow_home, "agora_reschedule_check", "wait")
    assert (result["sid"], result["ended_by"]) == (sid, "not_found")
    assert [f["fileName"] for f in result["files"]] == [f"{sid}_bulk_{sid}.m3u8"]


@pytest.mark.skipif(HAS_TASK_STATE_STORE, reason="Airflow 3.3+ keeps what earlier pokes saw (see the previous test)")
def test_reschedule_mode_without_a_task_state_store_fails_a_session_that_vanishes_between_pokes(
    airflow_home: Path, e2e_simulator: AgoraSimulator
) -> None:
    """Airflow < 3.3, as the README says: each reschedule starts with nothing the earlier pokes
    saw, so the poke that meets the 404 has never seen the recording running."""
    sid, run = run_that_sees_a_recording_vanish(airflow_home, e2e_simulator)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    assert f"Recording sid={sid} was not found by Agora" in output
    assert "It was never seen running by this task." in output


def test_deferrable_sensor_fails_on_a_persistent_404_like_poke_mode(
    airflow_home: Path, e2e_simulator: AgoraSimulator
) -> None:
    unknown = {"resource_id": "no-such-resource", "sid": "e" * 32, "grace": 2}
    run = dags_test(airflow_home, e2e_simulator, "agora_deferrable_check", dags=ROOT / "tests" / "dags", conf=unknown)
    output = run.stdout + run.stderr
    assert run.returncode == 1
    assert "running trigger in line" in output  # it did defer
    assert "past not_found_grace_period=2 s" in output


def test_deferrable_sensor_succeeds_through_the_trigger(airflow_home: Path, e2e_simulator: AgoraSimulator) -> None:
    # In progress at the first poke, so the sensor defers; stopped once the trigger has polled too,
    # and then at 8 ("exited") for an hour: the trigger can only end the wait on that status.
    recording = running_recording(e2e_simulator, hold=3600)
    sid = recording["sid"]
    stopper = after_queries(e2e_simulator, sid, 2, lambda: stop(e2e_simulator, recording))  # the poke, a poll
    conf = {**recording, "target_status": 8, "grace": 2, "on_not_found": "fail"}
    run = dags_test(airflow_home, e2e_simulator, "agora_deferrable_check", dags=ROOT / "tests" / "dags", conf=conf)
    stopper.join(10)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "running trigger in line" in run.stdout + run.stderr
    result = xcom(airflow_home, "agora_deferrable_check", "wait")
    assert (result["sid"], result["status"], result["ended_by"]) == (sid, 8, "status")
    assert [f["fileName"] for f in result["files"]] == [f"{sid}_bulk_{sid}.m3u8"]


def test_the_storage_pipeline_reads_each_playlist_from_the_bucket_it_verified(airflow_home: Path) -> None:
    """``agora_recording_to_storage`` (what ``make demo`` runs): the simulator uploads to a real
    S3-compatible server, ``wait_for_end`` verifies the files there, and ``read_playlists`` opens each
    playlist from the bucket through ``ObjectStoragePath`` and the ``recording_storage`` connection."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[test]')")
    pytest.importorskip("s3fs", reason="the s3 extra is not installed (pip install -e '.[test]')")
    from tests.storage_server import running_s3_server

    dag_id = "agora_recording_to_storage"
    # At half speed the stopped recording shows 6, 7 and 8 for 6 s: wait_for_end's first poke sees it
    # with its files, so what it verifies is the file list, not an empty one.
    simulator = AgoraSimulator(customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,), speed=0.5)
    with running_s3_server() as s3, simulator.start() as sim:
        s3.create_bucket("demo-recordings")
        storage = {"bucket": "demo-recordings", "endpoint_url": s3.endpoint_url, "region_name": "us-east-1"}
        run = dags_test(airflow_home, sim, dag_id, dags=ROOT / "dags", storage=storage)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        keys = s3.keys("demo-recordings")
    stopped = xcom(airflow_home, dag_id, "stop_recording")
    ended = xcom(airflow_home, dag_id, "wait_for_end")
    read = xcom(airflow_home, dag_id, "read_playlists")
    playlist_key = next(item["key"] for item in stopped["files"] if item["fileName"].endswith(".m3u8"))
    segments = [key for key in keys if key.startswith(playlist_key.removesuffix(".m3u8")) and key.endswith(".ts")]
    assert ended["verified_in_storage"] is True
    assert read == [
        {"key": playlist_key, "segments": len(segments), "duration_seconds": 2.0 * len(segments), "finished": True}
    ]
    manifest = json.loads(Path(xcom(airflow_home, dag_id, "build_manifest")).read_text())
    assert {item["uri"] for item in manifest["files_by_uid"]["0"]} == {
        f"s3://demo-recordings/{item['key']}" for item in stopped["files"]
    }
    assert STORAGE_SECRET_KEY not in run.stdout + run.stderr


def test_openlineage_names_the_recordings_files_as_the_tasks_outputs(
    airflow_home: Path, e2e_simulator: AgoraSimulator, tmp_path: Path
) -> None:
    """The real openlineage provider, with its file transport, captures what the operators and the
    sensor say they produced: the start operator the recording's prefix, the stop operator and
    the sensor each file, named as OpenLineage names object storage (``s3://bucket`` and the key)."""
    pytest.importorskip("airflow.providers.openlineage", reason="apache-airflow-providers-openlineage is not installed")
    events_file = tmp_path / "openlineage.jsonl"
    transport = json.dumps({"type": "file", "log_file_path": str(events_file), "append": True})
    run = dags_test(
        airflow_home,
        e2e_simulator,
        "agora_recording_pipeline",
        dags=ROOT / "dags",
        extra_env={"AIRFLOW__OPENLINEAGE__TRANSPORT": transport, "AIRFLOW__OPENLINEAGE__NAMESPACE": "agora-tests"},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    outputs: dict[str, set[tuple[str, str]]] = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        if event["eventType"] == "COMPLETE" and "." in event["job"]["name"]:
            task_id = event["job"]["name"].split(".", 1)[1]
            outputs[task_id] = {(output["namespace"], output["name"]) for output in event.get("outputs", [])}
    stopped = xcom(airflow_home, "agora_recording_pipeline", "stop_recording")
    started = xcom(airflow_home, "agora_recording_pipeline", "start_recording")
    assert outputs["stop_recording"] == {("s3://b", item["key"]) for item in stopped["files"]}
    assert outputs["start_recording"] == {("s3://b", started["storage"]["prefix"].rstrip("/"))}
