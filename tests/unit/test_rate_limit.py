"""The per-process request budget: never more than N requests in any sliding second."""

from __future__ import annotations

import heapq
import threading
import time

import pytest

from airflow_provider_agora._client.budget import Priority, RequestSpacer, Ticket, spacer_for
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
    tickets = {caller: Ticket(Priority.POLL) for caller in range(len(latencies))}
    arrived: list[float] = []
    while events:
        moment, _, what, caller = heapq.heappop(events)
        clock.now = moment
        if what == "claim":
            granted, delay = spacer.claim(tickets[caller])
            if not granted:
                heapq.heappush(events, (moment + delay, order, "claim", caller))
            else:
                arrived.append(moment + latencies[caller])
                heapq.heappush(events, (moment + latencies[caller] + 0.001, order, "answer", caller))
        else:
            spacer.release(tickets[caller])
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
    first = Ticket()
    assert spacer.claim(first) == (True, 0.0)
    spacer.release(first)
    clock.now += 5
    assert spacer.reserve() == 0.0
    assert spacer.claim(Ticket()) == (True, 0.0)


def test_a_retry_does_not_queue_behind_the_other_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    spacer = RequestSpacer(10, clock=clock)
    for _ in range(50):
        spacer.reserve()  # fifty waits queued: about five seconds of slots
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    with spacer.sending(Priority.CONTROL):  # a retry (the hook gives retries this priority)
        pass
    assert slept == []
    with spacer.sending(Priority.POLL):  # a new request waits its turn
        pass
    assert slept and slept[0] > 4.9


def test_control_calls_get_the_next_places_in_the_window_ahead_of_waiting_polls() -> None:
    """Step 2 has the order of the shared budget in Redis: once polls wait for a place in a full
    window, a control call that asks after them still gets the next place, then the next control
    call, then the polls first come first served, whoever asks first once a place frees."""
    clock = FakeClock()
    spacer = RequestSpacer(1, clock=clock)
    holder = Ticket()
    assert spacer.claim(holder) == (True, 0.0)
    names = ["poll 1", "poll 2", "control 1", "poll 3", "control 2"]
    waiting = {name: Ticket(Priority.CONTROL if name.startswith("control") else Priority.POLL) for name in names}
    for ticket in waiting.values():
        granted, delay = spacer.claim(ticket)
        assert not granted and delay == pytest.approx(1.02)  # in flight: frees a window after its answer
    order: list[str] = []
    last = holder
    while len(order) < len(waiting):
        spacer.release(last)  # answered: its place frees one window later, and only then
        clock.now += 1.02 + 0.001
        for name in reversed(names):  # the last to arrive asks first: the order is the queue's
            if name not in order and spacer.claim(waiting[name])[0]:
                order.append(name)
                last = waiting[name]
    assert order == ["control 1", "control 2", "poll 1", "poll 2", "poll 3"]


def test_a_ticket_that_stops_waiting_leaves_the_queue() -> None:
    clock = FakeClock()
    spacer = RequestSpacer(1, clock=clock)
    holder, cancelled, behind = Ticket(), Ticket(Priority.CONTROL), Ticket()
    assert spacer.claim(holder)[0]
    assert not spacer.claim(cancelled)[0]
    assert not spacer.claim(behind)[0]
    spacer.forget(cancelled)
    spacer.release(holder)
    clock.now += 1.03
    assert spacer.claim(behind) == (True, 0.0)


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
