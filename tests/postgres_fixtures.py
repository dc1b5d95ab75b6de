"""A private PostgreSQL cluster for the test session (peers/postgres.py) and a fresh database per test.

Skipped with the reason when PostgreSQL is not installed; a failure when RADDRAFT_REQUIRE_PEERS=1 (CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from peers.postgres import POSTGRES_INSTALL_HINT, PostgresCluster, find_postgres_bin, running_postgres


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    if find_postgres_bin() is None:
        message = f"PostgreSQL is not installed ({POSTGRES_INSTALL_HINT})"
        if os.environ.get("RADDRAFT_REQUIRE_PEERS") == "1":
            pytest.fail(f"required peer missing: {message}")
        pytest.skip(message)
    pytest.importorskip("psycopg", reason="psycopg is not installed (the `server` extra)")
    with running_postgres() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of an empty database of its own."""
    return postgres_cluster.new_database()
