"""The per-process request budget: never more than N requests in any sliding second."""

from __future__ import annotations

import heapq
import threading
import time
from typing import Any

import pytest

from airflow_provider_agora._rate_limit import RequestSpacer, spacer_for
from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.simulator import AgoraSimulator
from tests.support import FAST_RETRIES, max_in_sliding_second


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def arrivals(spacer: RequestSpacer, clock: FakeClock, latencies: list[float], start: float) -> list[float]:
    """Discrete-event run: callers that all want to send at ``start``; request i reaches the server
    ``latencies[i]`` after it is sent and is answered at once. Returns arrival times at the server."""
    clock.now = start
    events: list[tuple[float, int, str, int]] = []  # (time, order, what, caller)
    order = 0
    for caller in range(len(latencies)):
        events.append((start + spacer.reserve(), order, "claim", caller))
        order += 1
    heapq.heapify(events)
    sends: dict[int, Any] = {}
    arrived: list[float] = []
    while events:
        moment, _, what, caller = heapq.heappop(events)
        clock.now = moment
        if what == "claim":
            send, delay = spacer.claim()
            if send is None:
                heapq.heappush(events, (moment + delay, order, "claim", caller))
            else:
                sends[caller] = send
                arrived.append(moment + latencies[caller])
                heapq.heappush(events, (moment + latencies[caller] + 0.001, order, "answer", caller))
        else:
            spacer.release(sends[caller])
        order += 1
    return sorted(arrived)


@pytest.mark.parametrize("rate", [1, 3, 10, 25])
def test_no_second_at_the_server_holds_more_than_the_limit_even_after_an_idle_spell(rate: int) -> None:
    clock = FakeClock()
    spacer = RequestSpacer(rate, clock=clock)
    first = arrivals(spacer, clock, [0.002] * (3 * rate), start=1000.0)
    second = arrivals(spacer, clock, [0.002] * (3 * rate), start=first[-1] + 30)  # long enough to fill a bucket
    assert max_in_sliding_second(first + second) <= rate
    # ...and the budget is used: three seconds' worth in about three seconds (of the fake clock, so
    # machine load cannot change it).
    assert first[-1] - first[0] < 3.2


@pytest.mark.parametrize("slow", [0.05, 0.4, 2.0])
def test_requests_that_take_long_to_reach_the_server_cannot_exceed_the_limit(slow: float) -> None:
    """A new connection or a busy event loop delays some requests: Agora must still count <= 10."""
    clock = FakeClock()
    spacer = RequestSpacer(10, clock=clock)
    latencies = [slow if caller % 3 == 0 else 0.001 for caller in range(60)]
    assert max_in_sliding_second(arrivals(spacer, clock, latencies, start=1000.0)) <= 10


def test_the_first_request_after_idle_is_not_delayed() -> None:
    clock = FakeClock()
    spacer = RequestSpacer(10, clock=clock)
    spacer.reserve()
    send, _ = spacer.claim()
    assert send is not None
    spacer.release(send)
    clock.now += 5
    assert spacer.reserve() == 0.0
    assert spacer.claim()[1] == 0.0


def test_a_retry_does_not_queue_behind_the_other_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    spacer = RequestSpacer(10, clock=clock)
    for _ in range(50):
        spacer.reserve()  # fifty waits queued: about five seconds of slots
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    with spacer.sending(queue=False):  # a retry
        pass
    assert slept == []
    with spacer.sending():  # a new request waits its turn
        pass
    assert slept and slept[0] > 4.9


def test_hooks_of_one_account_share_one_budget_and_the_stricter_rate_wins() -> None:
    first = spacer_for("customer-a", 10)
    assert spacer_for("customer-a", 4) is first
    assert first.max_requests_per_second == 4
    assert spacer_for("customer-b", 10) is not first


def test_threads_with_their_own_hooks_stay_under_agoras_limit(agora_conn: AgoraSimulator) -> None:
    def hammer() -> None:
        hook = AgoraHook(retry_policy=FAST_RETRIES)
        for _ in range(4):
            hook.acquire("room", 1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    log = agora_conn.request_log
    assert len(log) == 16 > 10  # one request per call, and more than one second's budget: the limit has to act
    assert {r.status for r in log} == {200}  # the simulator enforces Agora's 10/s: no 429
    assert max_in_sliding_second([r.time for r in log]) <= 10
