"""Database failures are translated once, by the store (``faults.in_unit`` in
``Store.session``): callers above it see our errors, each carrying the HTTP answer it gets."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from cascade_cli import errors
from cascade_cli.clock import FakeClock
from cascade_cli.store import faults
from cascade_cli.store.engine import Store
from cascade_cli.web.db import ThreadedDb

_URL = make_url("sqlite:///x.db")


class _Orig(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def test_a_lock_that_outlived_the_wait_is_busy_not_a_bug() -> None:
    exc = OperationalError("UPDATE x", {}, _Orig("database is locked"))
    busy = faults.in_unit(exc, _URL, "sqlite:///x.db")
    assert isinstance(busy, errors.DatabaseBusy) and not busy.transient
    assert (busy.status, busy.code, busy.public_message()) == (
        503, "database_busy", "database busy, retry shortly")
    assert busy.headers() == {"Retry-After": "1"}
    assert busy.log_text() == "_Orig"


def test_a_deadlock_is_transient_and_a_constraint_is_a_bug() -> None:
    deadlock = faults.in_unit(OperationalError("UPDATE x", {}, _Orig("deadlock", "40P01")),
                              _URL, "u")
    assert isinstance(deadlock, errors.DatabaseBusy) and deadlock.transient
    assert faults.in_unit(IntegrityError("INSERT", {}, _Orig("duplicate", "23505")),
                          _URL, "u") is None


def test_recognised_faults_keep_their_own_answer() -> None:
    full = faults.in_unit(OperationalError("INSERT", {}, _Orig("database or disk is full")),
                          _URL, "u")
    assert isinstance(full, errors.DatabaseFull)
    assert (full.status, full.code, full.headers()) == (503, "database_full",
                                                        {"Retry-After": "60"})


def test_every_error_that_reaches_http_carries_its_answer() -> None:
    cases: list[tuple[errors.HttpError, int, str]] = [
        (errors.NotFound("node", "x"), 404, "not_found"),
        (errors.Conflict("taken", code="name_taken"), 409, "name_taken"),
        (errors.InvalidInput("bad", field="f"), 422, "invalid_input"),
        (errors.LeaseSuperseded("gone"), 409, "lease_superseded"),
        (errors.RateLimited("slow", retry_after=7.2), 429, "too_many_requests"),
        (errors.StoreError("down"), 503, "database_unavailable"),
    ]
    for exc, status, code in cases:
        assert (exc.status, exc.code) == (status, code), exc
    assert errors.RateLimited("slow", retry_after=7.2).headers() == {"Retry-After": "8"}
    assert errors.InvalidInput("bad", field="f").detail() == [
        {"field": "f", "type": "invalid_input", "message": "bad"}]
    assert errors.StoreError("host db1 down").public_message() == "database unavailable"


def test_a_unit_of_work_raises_our_error(store: Store) -> None:
    with pytest.raises(errors.DatabaseBusy) as caught, store.session() as s:
        s.execute(text("SELECT 1"))
        raise OperationalError("UPDATE x", {}, _Orig("database is locked"))
    assert isinstance(caught.value.__cause__, OperationalError)


def test_a_transient_conflict_runs_the_unit_again(store: Store) -> None:
    calls: list[int] = []

    def unit(s: Any, now: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE x", {}, _Orig("serialization", "40001"))
        return "done"

    assert ThreadedDb(store, FakeClock(), 1).call(unit) == "done"
    assert len(calls) == 2

    def busy(s: Any, now: Any) -> str:  # not transient: answered 503, not retried
        calls.append(1)
        raise OperationalError("UPDATE x", {}, _Orig("database is locked"))

    calls.clear()
    with pytest.raises(errors.DatabaseBusy):
        ThreadedDb(store, FakeClock(), 1).call(busy)
    assert len(calls) == 1
