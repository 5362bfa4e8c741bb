"""`make demo`: the example pipeline end to end against the embedded Agora simulator.

Starts an S3-compatible storage server (moto's) and the simulator on loopback, points the
``agora_default`` connection at the simulator and ``recording_storage`` at the storage, initialises
Airflow with its SQLite database under ``.airflow/``, runs ``agora_recording_to_storage``
(``dags/agora_recording_pipeline.py``) with ``airflow dags test`` and prints the manifest of the
recording's files, each with its URI, and what the downstream task read of each playlist from the
bucket. Exits non-zero if anything fails. Nothing here talks to the internet.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from airflow_provider_agora.simulator import AgoraSimulator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the storage server helper of the tests

from tests.storage_server import running_s3_server  # noqa: E402

DAG_ID = "agora_recording_to_storage"
BUCKET = "demo-recordings"
APP_ID = "0123456789abcdef0123456789abcdef"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_environment(
    home: Path, manifests: Path, simulator_url: str, secret: str, storage_url: str
) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AGORA_MANIFEST_DIR": str(manifests),
        "AIRFLOW_CONN_AGORA_DEFAULT": json.dumps(
            {
                "conn_type": "agora",
                "host": simulator_url,
                "login": "demo-customer",
                "password": secret,
                "extra": {"app_id": APP_ID},
            }
        ),
        "AIRFLOW_CONN_RECORDING_STORAGE": json.dumps(
            {
                "conn_type": "aws",
                "login": "DEMOACCESSKEY",
                "password": secrets.token_urlsafe(24),
                "extra": {"bucket": BUCKET, "endpoint_url": storage_url, "region_name": "us-east-1"},
            }
        ),
    }


def run(step: str, command: list[str], env: dict[str, str], log: Path) -> bool:
    print(f"-- {step}", flush=True)
    with log.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if result.returncode != 0:
        print(f"   failed (exit {result.returncode}); last lines of {log}:")
        print("\n".join(log.read_text().splitlines()[-40:]))
    return result.returncode == 0


def main() -> int:
    home = Path(os.environ.get("AGORA_DEMO_AIRFLOW_HOME") or ROOT / ".airflow")
    manifests = Path(os.environ.get("AGORA_MANIFEST_DIR") or ROOT / "demo-output")
    home.mkdir(parents=True, exist_ok=True)
    manifests.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(16)
    with (
        running_s3_server() as storage,
        AgoraSimulator(customer_id="demo-customer", customer_secret=secret, app_ids=(APP_ID,)).start() as sim,
    ):
        storage.create_bucket(BUCKET)
        print(f"-- S3-compatible storage (moto) listening on {storage.endpoint_url}, bucket {BUCKET}")
        print(f"-- Agora simulator listening on {sim.url}")
        env = airflow_environment(home, manifests, sim.url, secret, storage.endpoint_url)
        if not run(
            f"Initialising Airflow's SQLite database in {home}",
            [AIRFLOW, "db", "migrate"],
            env,
            home / "demo-db-migrate.log",
        ):
            return 1
        started = time.time()
        ok = run(
            f"Running {DAG_ID} with `airflow dags test`",
            [AIRFLOW, "dags", "test", DAG_ID],
            env,
            home / "demo-dags-test.log",
        )
        calls = Counter(
            f"{record.method} {record.path.rsplit('/', 1)[-1]} -> {record.status}"
            for record in sim.request_log
            if "/cloud_recording/" in record.path
        )
    print("-- Requests the simulator answered:")
    for call, count in sorted(calls.items()):
        print(f"   {count:3d} x {call}")
    if not ok:
        print(f"DAG run failed; the whole log is in {home / 'demo-dags-test.log'}")
        return 1
    written = [
        path
        for path in manifests.glob("*.json")
        if path.stat().st_mtime >= started - 1 and not path.name.endswith(".playlists.json")
    ]
    if not written:
        print(f"The DAG run succeeded but wrote no manifest into {manifests}.")
        return 1
    manifest = max(written, key=lambda path: path.stat().st_mtime)
    print(
        f"-- DAG run succeeded. Manifest {manifest.relative_to(ROOT) if manifest.is_relative_to(ROOT) else manifest}:"
    )
    print(manifest.read_text(), end="")
    playlists = manifest.with_name(manifest.stem + ".playlists.json")
    if not playlists.exists():
        print(f"The DAG run succeeded but its read_playlists task wrote no {playlists.name}.")
        return 1
    print(f"-- What the downstream task read from the bucket through ObjectStoragePath ({playlists.name}):")
    print(playlists.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
