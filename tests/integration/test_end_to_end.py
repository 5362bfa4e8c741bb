"""The provider inside a real Airflow (``airflow dags test`` on SQLite) against the simulator."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.simulator import AgoraSimulator
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, FAST_RETRIES, connection_json

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
    home: Path, sim: AgoraSimulator, dag_id: str, *, dags: Path, conf: dict[str, Any] | None = None, debug: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AGORA_MANIFEST_DIR": str(home / "manifests"),
        "AIRFLOW_CONN_AGORA_DEFAULT": connection_json(sim.url),
        "AIRFLOW_CONN_RECORDING_STORAGE": json.dumps(
            {"conn_type": "aws", "login": STORAGE_ACCESS_KEY, "password": STORAGE_SECRET_KEY, "extra": {"bucket": "b"}}
        ),
    }
    if debug:
        env["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "DEBUG"
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


def start_recording(sim: AgoraSimulator, uid: int) -> dict[str, str]:
    """Start a recording the way another system would (one uid per recorder: Agora refuses duplicates)."""
    os.environ["AIRFLOW_CONN_AGORA_DEFAULT"] = connection_json(sim.url)
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    resource_id = hook.acquire("e2e-room", uid)["resourceId"]
    sid = hook.start(resource_id, "e2e-room", uid, "mix", {"recordingFileConfig": {"avFileType": ["hls"]}})["sid"]
    return {"resource_id": resource_id, "sid": sid, "recording_mode": "mix"}


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
    if harness:  # Airflow 3's harness; Airflow 2's logs no such line
        assert sorted(masked) == sorted(SECRETS)
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
    assert "[debug" in output or "} DEBUG - " in output  # DEBUG logging was really on (Airflow 3 / 2 format)
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
    assert len(queries) >= 3
    assert {r.status for r in queries} == {404}


def test_reschedule_mode_succeeds_with_the_last_files_when_the_session_vanishes(
    airflow_home: Path, e2e_simulator: AgoraSimulator
) -> None:
    recording = start_recording(e2e_simulator, uid=102)
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    seen_running = threading.Event()

    def stop_once_seen() -> None:
        # Stop the recording once the sensor has seen it with a file (status 5).
        while not seen_running.is_set():
            if any(r.path.endswith("/query") and r.status == 200 for r in e2e_simulator.request_log):
                answer = hook.query(recording["resource_id"], recording["sid"], "mix")
                if answer["serverResponse"].get("fileList"):
                    seen_running.set()
            seen_running.wait(0.2)
        hook.stop(recording["resource_id"], recording["sid"], "mix", "e2e-room", 102)

    stopper = threading.Thread(target=stop_once_seen, daemon=True)
    stopper.start()
    conf = {"resource_id": recording["resource_id"], "sid": recording["sid"], "grace": 2, "on_not_found": "succeed"}
    run = dags_test(airflow_home, e2e_simulator, "agora_reschedule_check", dags=ROOT / "tests" / "dags", conf=conf)
    seen_running.set()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = xcom(airflow_home, "agora_reschedule_check", "wait")
    assert result["ended_by"] in ("status", "not_found")
    assert result["files"][0]["fileName"] == f"{recording['sid']}_e2e-room.m3u8"


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
    recording = start_recording(e2e_simulator, uid=103)
    hook = AgoraHook(retry_policy=FAST_RETRIES)
    first_poke = threading.Event()

    def has_files() -> bool:
        answer = hook.query(recording["resource_id"], recording["sid"], "mix")
        return bool(answer["serverResponse"].get("fileList"))

    def stop_after_the_first_poke() -> None:
        # Stop once the sensor has poked and the recording has a file (stopping earlier is Agora's
        # "no recorded data", a different story).
        while not first_poke.wait(0.1):
            polled = any(r.path.endswith(f"{recording['sid']}/mode/mix/query") for r in e2e_simulator.request_log)
            if polled and has_files():
                first_poke.set()
        hook.stop(recording["resource_id"], recording["sid"], "mix", "e2e-room", 103)

    e2e_simulator.clear_request_log()
    threading.Thread(target=stop_after_the_first_poke, daemon=True).start()
    conf = {**recording, "target_status": 8, "grace": 2, "on_not_found": "succeed"}
    run = dags_test(airflow_home, e2e_simulator, "agora_deferrable_check", dags=ROOT / "tests" / "dags", conf=conf)
    first_poke.set()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "running trigger in line" in run.stdout + run.stderr
    result = xcom(airflow_home, "agora_deferrable_check", "wait")
    assert result["ended_by"] in ("status", "not_found")
    assert result["files"][0]["fileName"] == f"{recording['sid']}_e2e-room.m3u8"
