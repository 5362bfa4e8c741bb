"""A test-only Airflow plugin, copied into a test API server's plugins folder: what the serving
process itself can tell about the receiver, read over HTTP by ``test_receiver_attacks.py``.

``GET /agora-receiver-probe/state`` answers the number of SQL statements that read the
``connection`` table (counted by an SQLAlchemy event listener on every engine), the serving
process's resident memory, and whether the provider's receiver module has been imported.
"""

from __future__ import annotations

import re
import sys
import threading

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.engine import Engine

_READS_CONNECTIONS = re.compile(r"^\s*select\b.*\bfrom\s+connection\b", re.IGNORECASE | re.DOTALL)
_lock = threading.Lock()
_connection_reads = 0


@event.listens_for(Engine, "before_cursor_execute")
def _count(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
    global _connection_reads
    if _READS_CONNECTIONS.match(statement):
        with _lock:
            _connection_reads += 1


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/state")
def state() -> dict[str, object]:
    return {
        "connection_reads": _connection_reads,
        "rss_kib": _rss_kib(),
        "receiver_imported": "airflow_provider_agora._ncs.receiver" in sys.modules,
    }


class AgoraReceiverProbe(AirflowPlugin):
    name = "agora_receiver_probe"
    fastapi_apps = [{"app": app, "url_prefix": "/agora-receiver-probe", "name": "test probe"}]  # noqa: RUF012
