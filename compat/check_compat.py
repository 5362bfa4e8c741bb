"""Compatibility check of the provider on one Airflow line: ``make compat-3.0`` (3.1, 3.2).

Run with the Python of a virtual environment that holds one Airflow release and the provider
installed editable, without extras; ``make compat-3.1`` builds it and runs::

    .venv-compat-3.1/bin/python -m pytest -v -p no:cacheprovider compat/check_compat.py

It is not part of the ``tests/`` suite (which needs the test extras and runs on Airflow 3.3 and
2.11). For the installed Airflow it checks, each in fresh processes and one AIRFLOW_HOME on SQLite:

1. registration: ``airflow providers get`` and ``airflow providers hooks`` (connection type ``agora``);
2. the connection form as the React UI reads it: ``GET /ui/connections/hook_meta`` of a real
   ``airflow api-server`` (the route returns ``airflow.api_fastapi.core_api.services.ui.connections.
   HookMetaService.hook_meta_data()`` on 3.0, 3.1 and 3.2), and its Test button against the simulator.
   Airflow 3.0 and 3.1 build that form from the hook's ``get_ui_field_behaviour`` and
   ``get_connection_form_widgets``, 3.2 from provider info (``ui-field-behaviour``, ``conn-fields``);
   3.0 only when wtforms is installed;
3. ``dags/agora_recording_pipeline.py`` with ``airflow dags test`` against the simulator started as
   ``python -m airflow_provider_agora.simulator``, once with the sensors poking and once deferrable
   (``[operators] default_deferrable``): the run succeeds and the sensors' XComs hold the files.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_agora._connection_form import CONN_FIELDS, DEFAULT_HOST, HOOK_NAME, UI_FIELD_BEHAVIOUR

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
AIRFLOW_VERSION = version("apache-airflow")
AIRFLOW_LINE = tuple(int(part) for part in AIRFLOW_VERSION.split(".")[:2])
PROVIDER_VERSION = version("airflow-provider-agora")
DAG_ID = "agora_recording_pipeline"
CUSTOMER_ID = "compat-customer"
CUSTOMER_SECRET = "compat-secret-Jm4r"
APP_ID = "compat0123456789abcdef0123456789"
BOOT_TIMEOUT = 240.0

if AIRFLOW_LINE < (3, 0):
    pytest.skip(f"checks Airflow 3.x; this is Airflow {AIRFLOW_VERSION}", allow_module_level=True)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ERROR_LINE = re.compile(r"\[(error|warning)\s*\]|Server error|Error:|Exception:| ERROR | Traceback", re.IGNORECASE)


def tail(text: str, lines: int = 80) -> str:
    return "\n".join(ANSI.sub("", text).splitlines()[-lines:])


def why_it_failed(output: str) -> str:
    """The error and warning lines of an Airflow run (its tracebacks are long), then its end."""
    plain = ANSI.sub("", output).splitlines()
    picked: list[int] = []
    for index, line in enumerate(plain):
        if ERROR_LINE.search(line) and "DeprecationWarning" not in line:
            # The line before an error is often the request that caused it.
            picked += [i for i in (index - 1, index) if i >= 0 and i not in picked]
    errors = [plain[i][:400] for i in picked[:60]]
    return "\n".join(["--- error lines (and the line before each) ---", *errors, "--- last lines ---", *plain[-30:]])


def airflow_env(home: Path, **overrides: str) -> dict[str, str]:
    """This process's environment without any Airflow setting of its own, plus ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "_AIRFLOW"))
    }
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "COLUMNS": "160",
        }
    )
    env.update(overrides)
    return env


def stop_process_group(process: subprocess.Popen[Any]) -> None:
    """End a child started with ``start_new_session=True``, and whatever it started."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)


# -- fixtures: one AIRFLOW_HOME and one simulator for the whole line ------------------------------


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"agora-compat-{AIRFLOW_VERSION}-") as directory:
        path = Path(directory)
        migrate = subprocess.run(
            [AIRFLOW, "db", "migrate"],
            env=airflow_env(path),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert migrate.returncode == 0, tail(migrate.stdout + migrate.stderr)
        yield path


@pytest.fixture(scope="module")
def simulator_url(home: Path) -> Iterator[str]:
    """``python -m airflow_provider_agora.simulator`` on a free loopback port, in real time."""
    log = home / "simulator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_agora.simulator",
                "--port",
                str(free_loopback_port()),
                "--customer-id",
                CUSTOMER_ID,
                "--customer-secret",
                CUSTOMER_SECRET,
                "--app-id",
                APP_ID,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            lines = log.read_text(errors="replace").splitlines()
            if lines and lines[0].startswith("Agora simulator listening on "):
                yield lines[0].rsplit(" ", 1)[-1]
                return
            time.sleep(0.1)
        pytest.fail(f"the simulator did not start (exit {process.poll()}):\n{tail(log.read_text(errors='replace'))}")
    finally:
        stop_process_group(process)


def agora_connection(url: str) -> dict[str, Any]:
    return {
        "conn_type": "agora",
        "host": url,
        "login": CUSTOMER_ID,
        "password": CUSTOMER_SECRET,
        "extra": {"app_id": APP_ID},
    }


# -- 1. registration ---------------------------------------------------------------------------------


def airflow_cli(home: Path, *args: str) -> str:
    result = subprocess.run(
        [AIRFLOW, *args], env=airflow_env(home), capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, tail(result.stdout + result.stderr)
    return result.stdout


def json_rows(output: str) -> list[dict[str, Any]]:
    """The JSON table of ``airflow ... -o json``; Airflow may log lines (some starting "[") before it."""
    decoder = json.JSONDecoder()
    for line_start in [0, *(i + 1 for i, char in enumerate(output) if char == "\n")]:
        if output.startswith("[", line_start):
            with contextlib.suppress(ValueError):
                rows, _ = decoder.raw_decode(output, line_start)
                if isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
                    return rows
    raise AssertionError(f"no JSON table in the output:\n{tail(output)}")


def test_provider_is_registered(home: Path) -> None:
    (entry,) = json_rows(airflow_cli(home, "providers", "get", "airflow-provider-agora", "-o", "json"))
    assert (entry["Provider"], entry["Version"]) == ("airflow-provider-agora", PROVIDER_VERSION)

    hooks = json_rows(airflow_cli(home, "providers", "hooks", "-o", "json"))
    (agora,) = [row for row in hooks if row["connection_type"] == "agora"]
    assert agora["class"] == "airflow_provider_agora.hooks.agora.AgoraHook"
    assert agora["package_name"] == "airflow-provider-agora"
    assert agora["conn_id_attribute_name"] == "agora_conn_id"


# -- 2. the connection form, from a real API server -----------------------------------------------


class ApiServer:
    """``airflow api-server`` on loopback: everyone an admin, connection test enabled."""

    def __init__(self, home: Path) -> None:
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "api-server.log"
        self.env = airflow_env(
            home,
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""

    def log_tail(self) -> str:
        return f"--- {self.log} ---\n" + tail(self.log.read_text(errors="replace") if self.log.exists() else "")

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.log.parent,
            )
        deadline = time.monotonic() + BOOT_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow api-server exited with {self.process.returncode}\n{self.log_tail()}")
            try:
                answer = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2)
                if answer.status_code == 200 and answer.json()["metadatabase"]["status"] == "healthy":
                    token = requests.get(f"{self.url}/auth/token", timeout=30)
                    assert token.status_code in (200, 201), f"GET /auth/token: {token.status_code} {token.text}"
                    self.token = token.json()["access_token"]
                    return
                last = f"HTTP {answer.status_code}: {answer.text[:200]}"
            except (requests.RequestException, ValueError, KeyError) as error:
                last = f"{type(error).__name__}: {error}"
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.5)
        raise RuntimeError(f"airflow api-server not healthy after {BOOT_TIMEOUT:.0f} s ({last})\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kwargs)


@pytest.fixture(scope="module")
def api_server(home: Path) -> Iterator[ApiServer]:
    server = ApiServer(home)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def expected_extra_schema(name: str) -> dict[str, Any]:
    """The JSON schema the UI gets for one extra field on this Airflow line."""
    spec = CONN_FIELDS[name]
    if AIRFLOW_LINE >= (3, 2):
        # Read from provider info (conn-fields) as declared.
        return {**spec["schema"], "title": spec["label"]}
    # 3.0 and 3.1 read the hook's WTForms fields through mocks: a field's class gives the type
    # (Airflow's hook form has no number field: timeout is a StringField) and validators other
    # than Optional are not carried over.
    json_type = next(t for t in spec["schema"]["type"] if t != "null")
    field_type = {"string": "string", "integer": "integer", "number": "string"}[json_type]
    schema: dict[str, Any] = {"type": [field_type, "null"], "title": spec["label"]}
    if spec["schema"].get("format") == "password":  # a PasswordField: the UI hides what is typed
        schema["format"] = "password"
    return schema


def test_hook_meta_offers_the_agora_form(api_server: ApiServer) -> None:
    answer = api_server.request("GET", "/ui/connections/hook_meta")
    assert answer.status_code == 200, f"{answer.status_code} {answer.text}\n{api_server.log_tail()}"
    entries = {entry["connection_type"]: entry for entry in answer.json()}
    assert "agora" in entries, f"agora not offered; types: {sorted(entries)}\n{api_server.log_tail()}"
    agora = entries["agora"]
    assert agora["hook_class_name"] == "airflow_provider_agora.hooks.agora.AgoraHook"
    assert agora["hook_name"] == HOOK_NAME

    placeholders = UI_FIELD_BEHAVIOUR["placeholders"]
    assert agora["standard_fields"] == {
        "description": None,
        "url_schema": {"hidden": True, "title": None, "placeholder": None},
        "port": {"hidden": True, "title": None, "placeholder": None},
        "host": {"hidden": False, "title": "API host", "placeholder": DEFAULT_HOST},
        "login": {"hidden": False, "title": "Customer ID", "placeholder": placeholders["login"]},
        "password": {"hidden": False, "title": "Customer Secret", "placeholder": placeholders["password"]},
    }, f"standard fields on Airflow {AIRFLOW_VERSION}: {json.dumps(agora['standard_fields'], indent=1)}"

    extra = agora["extra_fields"] or {}
    assert {"app_id", "max_requests_per_second", "timeout"} <= set(extra), json.dumps(agora, indent=1)
    assert set(extra) == set(CONN_FIELDS), json.dumps(agora, indent=1)
    for name, spec in CONN_FIELDS.items():
        assert extra[name]["schema"] == expected_extra_schema(name), (name, extra[name])
        assert extra[name]["description"] == spec["description"]
        assert extra[name]["value"] is None


def test_the_test_button_reaches_the_simulator(api_server: ApiServer, simulator_url: str) -> None:
    """What the form's Test button posts: ``POST /api/v2/connections/test``."""
    connection = agora_connection(simulator_url)
    body = {**connection, "connection_id": "agora_compat", "extra": json.dumps(connection["extra"])}
    answer = api_server.request("POST", "/api/v2/connections/test", json=body)
    assert answer.status_code == 200, f"{answer.status_code} {answer.text}\n{api_server.log_tail()}"
    assert answer.json()["status"] is True, answer.json()

    wrong = api_server.request("POST", "/api/v2/connections/test", json={**body, "password": "not-the-secret"})
    assert wrong.status_code == 200, wrong.text
    assert wrong.json()["status"] is False, wrong.json()
    assert CUSTOMER_SECRET not in wrong.json()["message"]


# -- 3. the example pipeline with `airflow dags test` ---------------------------------------------


def query_one(home: Path, sql: str, *parameters: str) -> Any:
    with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
        return db.execute(sql, parameters).fetchone()


def xcom(home: Path, run_id: str, task_id: str, key: str = "return_value") -> Any:
    row = query_one(
        home,
        "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ?",
        DAG_ID,
        run_id,
        task_id,
        key,
    )
    assert row is not None, f"no XCom {task_id}/{key} in run {run_id}"
    return json.loads(row[0]) if isinstance(row[0], (str, bytes)) else row[0]


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_example_pipeline_succeeds(home: Path, simulator_url: str, mode: str) -> None:
    manifests = home / f"manifests-{mode}"
    env = airflow_env(
        home,
        AGORA_MANIFEST_DIR=str(manifests),
        AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE=str(mode == "deferrable"),
        AIRFLOW_CONN_AGORA_DEFAULT=json.dumps(agora_connection(simulator_url)),
        AIRFLOW_CONN_RECORDING_STORAGE=json.dumps(
            {
                "conn_type": "aws",
                "login": "COMPATACCESSKEY",
                "password": "compat-storage-secret",
                "extra": {"bucket": "b"},
            }
        ),
    )
    if AIRFLOW_LINE == (3, 0):
        # build_manifest imports recording_manifest from the DAGs folder when it runs. Airflow 3.0's
        # `dags test` runs tasks in its own process without the DAGs folder on sys.path (3.0 workers
        # add the bundle root, and 3.1+ `dags test` keeps it there), so put it there for 3.0.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "dags"), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [AIRFLOW, "dags", "test", DAG_ID], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT, check=False
    )
    output = run.stdout + run.stderr
    if run.returncode != 0:
        pytest.fail(f"airflow dags test {DAG_ID} exited {run.returncode} ({mode})\n{why_it_failed(output)}")

    run_id, state = query_one(
        home, "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", DAG_ID
    )
    assert state == "success"
    if mode == "deferrable":
        assert "running trigger in line" in output, "the sensors never deferred\n" + tail(output)
    else:
        assert "running trigger in line" not in output

    recording = xcom(home, run_id, "wait_until_recording")
    assert recording["status"] == 5  # the recording runs until the stop task
    assert recording["files"], recording
    assert all(entry["fileName"].startswith("recordings/") for entry in recording["files"])
    assert xcom(home, run_id, "wait_until_recording", key="files") == recording["files"]
    # Whether the end was Agora's 8 or its 404 is a race in Agora itself; the manifest joins the
    # stop's files with the end's, so it is the one outcome to check.
    manifest = json.loads(Path(xcom(home, run_id, "build_manifest")).read_text())
    assert manifest["sid"] == recording["sid"]
    assert manifest["file_count"] == 2  # the m3u8 and the mp4
