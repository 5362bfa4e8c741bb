"""Control calls go ahead of polls in the per-process budget: ``start`` follows its ``acquire``
within Agora's two seconds even while many waits fill the budget."""

from __future__ import annotations

import threading
import time

from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.simulator import AgoraSimulator
from tests.support import FAST_RETRIES

LIMIT = 10
WAITS = 30


def test_start_follows_acquire_ahead_of_thirty_polling_waits(agora_conn: AgoraSimulator) -> None:
    polled = agora_conn.create_recordings([time.time() + 3600] * WAITS, hold=3600)
    starting = threading.Event()
    done = threading.Event()

    def wait_on(recording: dict[str, str]) -> None:
        hook = AgoraHook(retry_policy=FAST_RETRIES)
        starting.wait()
        while not done.is_set():  # a poke-mode sensor with poke_interval 0: as much demand as it can
            hook.query(recording["resource_id"], recording["sid"], recording_mode="mix")

    threads = [threading.Thread(target=wait_on, args=(recording,)) for recording in polled]
    for thread in threads:
        thread.start()
    starter = AgoraHook(retry_policy=FAST_RETRIES)
    try:
        starting.set()
        while sum(1 for record in agora_conn.request_log if record.path.endswith("/query")) < WAITS:
            time.sleep(0.01)  # until every wait is polling: the budget is full
        for number in range(2):
            resource_id = starter.acquire(f"room-{number}", 4242)["resourceId"]
            starter.start(resource_id, f"room-{number}", 4242, recording_mode="mix", client_request={})
    finally:
        done.set()
        for thread in threads:
            thread.join()

    ordered = sorted(agora_conn.request_log, key=lambda record: record.time)
    names = [record.path.rsplit("/", 1)[-1] for record in ordered]
    acquires = [index for index, name in enumerate(names) if name == "acquire"]
    starts = [index for index, name in enumerate(names) if name == "start"]
    assert len(acquires) == len(starts) == 2
    # Requests that reached Agora between each acquire and its start: under two seconds' worth.
    between = [start - acquire - 1 for acquire, start in zip(acquires, starts, strict=True)]
    assert max(between) < 2 * LIMIT, between
    # Meanwhile the polls were served in turn: the queue was long, so without priority start would wait.
    assert names.count("query") > 1.5 * WAITS
    assert all(record.status != 429 for record in ordered)
