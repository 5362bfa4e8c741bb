"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import PostgresServer, RedisServer, running_postgres, running_redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port, shared by a module's tests."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free loopback port, one per test session, for the tests that run
    several Airflow processes on one metadata database (SQLite is unfit for that): each such cluster
    takes a fresh database on it (``create_database``). Started only when a test asks for it."""
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def postgres_database_url(postgres_server: PostgresServer) -> str:
    """``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` of a fresh, empty database on the session's server, for
    one module's Airflow cluster."""
    return postgres_server.sql_alchemy_conn(postgres_server.create_database())
