"""The simulator as a separate process: ``python -m airflow_provider_agora.simulator``."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support import free_port

AUTH = ("sim-customer", "sim-secret")
REPO_ROOT = Path(__file__).resolve().parents[2]

# --- CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_its_url_serves_and_exits_0_on_signal(signum: int) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_agora.simulator", "--port", str(port), "--speed", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "simulator printed nothing"
        assert process.stdout.readline().strip() == f"Agora simulator listening on http://127.0.0.1:{port}"
        response = requests.post(
            f"http://127.0.0.1:{port}/v1/apps/sim-app/cloud_recording/acquire",
            json={"cname": "c", "uid": "1", "clientRequest": {}},
            auth=AUTH,
            timeout=5,
        )
        assert response.status_code == 200
        process.send_signal(signum)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_refuses_non_loopback_host_without_allow_remote() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_agora.simulator", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=20,
    )
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr
