"""A real Airflow API server (with its React UI) on loopback, for the connection-form tests.

Started in a fresh AIRFLOW_HOME on SQLite, with the simple auth manager making everyone an admin (so
``GET /auth/token`` hands out a token and the UI needs no login) and the connection test enabled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.support import free_port

CHROMIUM = "/usr/bin/chromium"
# Flags known to work for headless Debian Chromium as root on a machine with a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BOOT_TIMEOUT = 180.0
MIGRATE_TIMEOUT = 300.0


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"<no log: {error}>"
    return "\n".join(text.splitlines()[-lines:])


def airflow_env(home: Path, **overrides: str) -> dict[str, str]:
    """The test process's environment without any Airflow setting of its own, plus ours."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "_AIRFLOW"))
    }
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        {
            "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


class AirflowApiServer:
    """``airflow api-server`` in its own process group; ``stop()`` ends the whole group."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "api-server.log"
        self.env = airflow_env(home, AIRFLOW__API__HOST="127.0.0.1", AIRFLOW__API__PORT=str(self.port))
        self.process: subprocess.Popen[bytes] | None = None
        self._token: str | None = None

    def log_tail(self, lines: int = 60) -> str:
        return f"--- last lines of {self.log_path} ---\n{tail(self.log_path, lines)}"

    def migrate(self) -> None:
        (self.home / "dags").mkdir(exist_ok=True)
        log = self.home / "db-migrate.log"
        with log.open("wb") as out:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=MIGRATE_TIMEOUT,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"airflow db migrate exited {result.returncode}\n{tail(log)}")

    def start(self) -> None:
        out = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
        finally:
            out.close()  # the child holds its own copy
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + BOOT_TIMEOUT
        last = "no answer yet"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"airflow api-server exited with {code} while starting\n{self.log_tail()}")
            try:
                answer = requests.get(f"{self.url}/api/v2/monitor/health", timeout=2)
                if answer.status_code == 200 and answer.json()["metadatabase"]["status"] == "healthy":
                    return
                last = f"HTTP {answer.status_code}: {answer.text[:200]}"
            except (requests.RequestException, ValueError, KeyError) as error:
                last = f"{type(error).__name__}: {error}"
            # Poll: wake up again at once if the process dies in the meantime.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=0.25)
        raise RuntimeError(
            f"airflow api-server not healthy on {self.url} after {BOOT_TIMEOUT:.0f}s ({last})\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    # -- Airflow's own API ------------------------------------------------------------------------

    @property
    def token(self) -> str:
        if self._token is None:
            answer = requests.get(f"{self.url}/auth/token", timeout=30)
            assert answer.status_code in (200, 201), f"GET /auth/token: HTTP {answer.status_code} {answer.text}"
            self._token = answer.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
