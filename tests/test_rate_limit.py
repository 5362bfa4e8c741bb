"""The per-process request budget: never more than N requests in any sliding second."""

from __future__ import annotations

import threading

import pytest

from airflow_provider_agora._rate_limit import RequestSpacer, spacer_for
from airflow_provider_agora.hooks.agora import AgoraHook
from airflow_provider_agora.simulator import AgoraSimulator
from tests.conftest import FAST_RETRIES, max_in_sliding_second


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send_times(spacer: RequestSpacer, clock: FakeClock, count: int, lateness: float = 0.0) -> list[float]:
    """Callers that all want to send now, each waking ``lateness`` after its slot (sleeps are simulated)."""
    slots = sorted(clock.now + spacer.reserve() for _ in range(count))
    sent = []
    for number, slot in enumerate(slots):
        # Every other caller wakes late, so late and punctual callers interleave.
        clock.now = max(clock.now, slot + (lateness if number % 2 == 0 else 0.0))
        while (delay := spacer.claim()) > 0:
            clock.now += delay
        sent.append(clock.now)
    return sent


@pytest.mark.parametrize("rate", [1, 3, 10, 25])
def test_no_sliding_second_holds_more_than_the_limit_even_after_an_idle_spell(rate: int) -> None:
    clock = FakeClock()
    spacer = RequestSpacer(rate, clock=clock)
    times = send_times(spacer, clock, 3 * rate)
    clock.now = times[-1] + 30  # idle long enough to fill any token bucket
    times += send_times(spacer, clock, 3 * rate)
    assert max_in_sliding_second(times) <= rate
    # ...and the budget is used: the first burst takes about three seconds, not more.
    assert times[3 * rate - 1] - times[0] < 3.1


@pytest.mark.parametrize("lateness", [0.05, 0.3, 2.0])
def test_callers_waking_late_from_their_slot_cannot_exceed_the_limit(lateness: float) -> None:
    clock = FakeClock()
    spacer = RequestSpacer(10, clock=clock)
    times = send_times(spacer, clock, 60, lateness=lateness)
    assert max_in_sliding_second(times) <= 10


def test_the_first_request_after_idle_is_not_delayed() -> None:
    clock = FakeClock()
    spacer = RequestSpacer(10, clock=clock)
    spacer.reserve()
    spacer.claim()
    clock.now += 5
    assert spacer.reserve() == 0.0
    assert spacer.claim() == 0.0


def test_hooks_of_one_account_share_one_budget_and_the_stricter_rate_wins() -> None:
    first = spacer_for("customer-a", 10)
    assert spacer_for("customer-a", 4) is first
    assert first.max_requests_per_second == 4
    assert spacer_for("customer-b", 10) is not first


def test_threads_with_their_own_hooks_stay_under_agoras_limit(agora_conn: AgoraSimulator) -> None:
    def hammer() -> None:
        hook = AgoraHook(retry_policy=FAST_RETRIES)
        for _ in range(8):
            hook.acquire("room", 1)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    log = agora_conn.request_log
    assert len(log) == 32
    assert {r.status for r in log} == {200}  # the simulator enforces Agora's 10/s: no 429
    assert max_in_sliding_second([r.time for r in log]) <= 10
