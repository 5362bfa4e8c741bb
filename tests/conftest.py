"""Shared fixtures. Airflow is pointed at a throw-away AIRFLOW_HOME before anything imports it."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

# One per pytest process (each xdist worker too), removed when that process exits. Registered before
# Airflow is imported, so it runs after Airflow's own exit handlers (atexit runs last-in, first-out),
# and after every Airflow process a test started has ended.
_AIRFLOW_HOME = tempfile.mkdtemp(prefix="agora-tests-airflow-")
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import pytest  # noqa: E402

from airflow_provider_agora.simulator import AgoraSimulator  # noqa: E402
from airflow_provider_agora.testing import reset_process_state  # noqa: E402
from tests.support import APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, ScriptedAgora, connection_json  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_process_state() -> Iterator[None]:
    """Each test starts with what a fresh worker process holds: its own request budgets, no
    connection read by the receiver."""
    reset_process_state()
    yield
    reset_process_state()


@pytest.fixture
def simulator() -> Iterator[AgoraSimulator]:
    """The embedded Agora simulator on loopback, ten times faster than real time."""
    with AgoraSimulator(
        customer_id=CUSTOMER_ID, customer_secret=CUSTOMER_SECRET, app_ids=(APP_ID,), speed=10.0
    ).start() as sim:
        yield sim


@pytest.fixture
def agora_conn(simulator: AgoraSimulator, monkeypatch: pytest.MonkeyPatch) -> AgoraSimulator:
    """``agora_default`` pointing at the simulator."""
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(simulator.url))
    return simulator


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedAgora]:
    server = ScriptedAgora()
    server.thread.start()
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_DEFAULT", connection_json(server.url))
    yield server
    server.server.shutdown()
    server.server.server_close()
