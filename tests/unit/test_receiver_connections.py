"""How the receiver finds the connection a notification URL names, at a bounded cost whatever a
stranger sends (``_receiver_connections``). Connections come from ``AIRFLOW_CONN_*`` variables,
read through Airflow's own lookup; the counts are the receiver's own lookups."""

from __future__ import annotations

import time
import uuid

import pytest

from airflow_provider_agora._ncs.receiver_connections import (
    LOOKUP_BURST,
    LOOKUPS_PER_SECOND,
    MAX_REFUSED_IDS,
    Found,
    Refused,
    _Connections,
    connection_id_problem,
)
from tests.support import RedisServer, connection_json

NCS_SECRET = "ncs-unit-secret-Rb2p"


@pytest.fixture
def receiving(monkeypatch: pytest.MonkeyPatch) -> _Connections:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AGORA_DEFAULT",
        connection_json("http://127.0.0.1:9", ncs_secret=NCS_SECRET, redis_conn_id="agora_redis"),
    )
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_REDIS", RedisServer().connection_uri())
    monkeypatch.setenv(
        "AIRFLOW_CONN_AGORA_MISSING_REDIS",
        connection_json("http://127.0.0.1:9", ncs_secret=NCS_SECRET, redis_conn_id="no_such_redis"),
    )
    monkeypatch.setenv("AIRFLOW_CONN_AGORA_NO_SECRET", connection_json("http://127.0.0.1:9"))
    return _Connections()


@pytest.mark.parametrize("conn_id", ["", "a b", "a" * 251, "agora_default\n", "agora<script>", "agora_default\x00"])
def test_an_id_that_breaks_airflows_rule_is_refused_without_a_lookup(receiving: _Connections, conn_id: str) -> None:
    found = receiving.get(conn_id)
    assert isinstance(found, Refused) and "not valid" in found.reason
    assert receiving.lookups == 0


def test_airflows_rule_accepts_what_airflow_accepts() -> None:
    assert [connection_id_problem(conn_id) for conn_id in ("agora_default", "a.b-c:d(e)#!/\\", "a" * 250)] == [
        None,
        None,
        None,
    ]


def test_a_case_variant_of_an_environment_variable_is_refused_without_a_lookup(receiving: _Connections) -> None:
    found = receiving.get("AgORA_dEfAUlT")
    assert isinstance(found, Refused) and "whose id is 'agora_default'" in found.reason
    assert receiving.lookups == 0
    assert isinstance(receiving.get("agora_default"), Found)


def test_a_known_connection_is_read_once_per_interval(receiving: _Connections) -> None:
    answers = [receiving.get("agora_default") for _ in range(100)]
    assert all(isinstance(found, Found) and found.problem is None for found in answers)
    assert receiving.lookups == 1


def test_a_connection_without_ncs_secret_is_refused_and_remembered(receiving: _Connections) -> None:
    answers = [receiving.get("agora_no_secret") for _ in range(10)]
    assert all(isinstance(found, Refused) and "has no ncs_secret" in found.reason for found in answers)
    assert receiving.lookups == 1


def test_a_misconfigured_connection_is_found_with_its_problem_and_not_read_again(receiving: _Connections) -> None:
    first, again = receiving.get("agora_missing_redis"), receiving.get("agora_missing_redis")
    assert isinstance(first, Found) and first is again
    assert first.problem is not None and "'no_such_redis', which does not exist" in first.problem
    assert receiving.lookups == 1


def test_made_up_ids_cost_bounded_memory_and_lookups_within_the_budget(receiving: _Connections) -> None:
    began = time.monotonic()
    answers = [receiving.get(uuid.uuid4().hex) for _ in range(5_000)]
    elapsed = time.monotonic() - began
    assert all(isinstance(found, Refused) for found in answers)
    assert receiving.lookups <= LOOKUP_BURST + LOOKUPS_PER_SECOND * elapsed
    assert len(receiving._refused) <= MAX_REFUSED_IDS


def test_no_secret_appears_in_what_the_receiver_keeps(receiving: _Connections) -> None:
    found = receiving.get("agora_default")
    assert isinstance(found, Found)
    assert NCS_SECRET not in repr(found)
    assert RedisServer.PASSWORD not in repr(found)


def test_every_connection_of_one_redis_shares_one_client(
    receiving: _Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_AGORA_PROJECT_B",
        connection_json("http://127.0.0.1:9", ncs_secret="ncs-other-project-Lp0s", redis_conn_id="agora_redis"),
    )
    project_a, project_b = receiving.get("agora_default"), receiving.get("agora_project_b")
    assert isinstance(project_a, Found) and isinstance(project_b, Found)
    store_a = project_a.store(project_a.settings.notification_namespaces[0])  # type: ignore[union-attr]
    store_b = project_b.store(project_b.settings.notification_namespaces[0])  # type: ignore[union-attr]
    assert store_a is not store_b and store_a.keys != store_b.keys
    assert store_a.client is store_b.client


def test_a_known_connection_is_read_again_even_while_made_up_ids_exhaust_the_budget(
    receiving: _Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_agora._ncs import receiver_connections as _receiver_connections

    assert isinstance(receiving.get("agora_default"), Found)
    flood = [receiving.get(uuid.uuid4().hex) for _ in range(LOOKUP_BURST * 5)]
    assert [found.kind for found in flood if isinstance(found, Refused)].count("budget") > 0
    lookups = receiving.lookups
    monkeypatch.setattr(_receiver_connections, "REREAD_SECONDS", 0.0)  # its interval is over
    again = receiving.get("agora_default")
    assert isinstance(again, Found) and receiving.lookups == lookups + 1
