"""Database locks: one holder at a time, release by the holder only, stale locks taken over."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, update

from recsys.db.engine import session_scope
from recsys.db.models import Lock
from recsys.errors import LockError
from recsys.training.locks import DatabaseLock, holder_of

HOUR = 3600.0


def test_acquire_conflict_and_release(engine: Engine) -> None:
    first = DatabaseLock(engine, "retrain", stale_after=HOUR)
    second = DatabaseLock(engine, "retrain", stale_after=HOUR)
    first.acquire()
    holder = holder_of(engine, "retrain")
    assert holder is not None and holder.owner == first.owner

    with pytest.raises(LockError, match=r"lock 'retrain' is held by .*:\d+:[0-9a-f]{8} since"):
        second.acquire()
    assert not second.held

    second.release()  # not held: must not delete the other holder's row
    assert holder_of(engine, "retrain").owner == first.owner  # type: ignore[union-attr]

    first.release()
    assert holder_of(engine, "retrain") is None
    second.acquire()
    assert holder_of(engine, "retrain").owner == second.owner  # type: ignore[union-attr]
    second.release()


def test_different_names_do_not_conflict_and_context_manager_releases(engine: Engine) -> None:
    with DatabaseLock(engine, "a", stale_after=HOUR), DatabaseLock(engine, "b", stale_after=HOUR):
        assert holder_of(engine, "a") is not None and holder_of(engine, "b") is not None
    assert holder_of(engine, "a") is None and holder_of(engine, "b") is None

    with pytest.raises(RuntimeError), DatabaseLock(engine, "a", stale_after=HOUR):
        raise RuntimeError("the job failed")
    assert holder_of(engine, "a") is None  # released on failure too


def test_an_old_lock_is_taken_over(engine: Engine) -> None:
    abandoned = DatabaseLock(engine, "retrain", stale_after=HOUR)
    abandoned.acquire()
    with session_scope(engine) as session:
        session.execute(
            update(Lock)
            .where(Lock.name == "retrain")
            .values(acquired_at=datetime.now(UTC) - timedelta(hours=2))
        )
    holder = holder_of(engine, "retrain")
    assert holder is not None and 7000 < holder.age_seconds() < 7400

    successor = DatabaseLock(engine, "retrain", stale_after=HOUR)
    successor.acquire()
    assert holder_of(engine, "retrain").owner == successor.owner  # type: ignore[union-attr]
    with pytest.raises(LockError, match="taken over"):
        abandoned.refresh()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(engine: Engine) -> None:
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    with session_scope(engine) as session:
        session.execute(
            insert(Lock).values(
                name="retrain",
                owner=f"{socket.gethostname()}:{dead_pid.pid}:deadbeef",
                acquired_at=datetime.now(UTC),
            )
        )
    lock = DatabaseLock(engine, "retrain", stale_after=HOUR)
    lock.acquire()
    assert holder_of(engine, "retrain").owner == lock.owner  # type: ignore[union-attr]


def test_a_fresh_lock_of_another_host_is_respected(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.execute(
            insert(Lock).values(name="retrain", owner="elsewhere:1:cafe", acquired_at=datetime.now(UTC))
        )
    with pytest.raises(LockError, match="elsewhere:1:cafe"):
        DatabaseLock(engine, "retrain", stale_after=HOUR).acquire()


def test_refresh_renews_the_time(engine: Engine) -> None:
    lock = DatabaseLock(engine, "retrain", stale_after=HOUR)
    lock.acquire()
    with session_scope(engine) as session:
        session.execute(
            update(Lock)
            .where(Lock.name == "retrain")
            .values(acquired_at=datetime.now(UTC) - timedelta(minutes=30))
        )
    lock.refresh()
    assert holder_of(engine, "retrain").age_seconds() < 60  # type: ignore[union-attr]
    lock.release()


def test_bad_arguments_are_named() -> None:
    with pytest.raises(LockError, match="1 to 64 characters"):
        DatabaseLock(None, "", stale_after=HOUR)  # type: ignore[arg-type]
    with pytest.raises(LockError, match="stale_after must be positive, got 0"):
        DatabaseLock(None, "x", stale_after=0)  # type: ignore[arg-type]


def test_a_live_holder_keeps_its_lock_past_the_stale_time(engine: Engine) -> None:
    """The heartbeat: with a stale time of 1.5 s, a holder alive for 4 s (well past it) is never
    taken over (without it, a second pipeline run took the lock of a live one and both promoted).
    The stale time leaves the heartbeat (every 0.5 s) a second of slack on a busy machine: with
    0.6 s, a late beat under CI load let the lock look stale."""
    import time

    first = DatabaseLock(engine, "retrain", stale_after=1.5)
    second = DatabaseLock(engine, "retrain", stale_after=1.5)
    with first:
        for _ in range(8):
            time.sleep(0.5)
            holder = holder_of(engine, "retrain")
            assert holder is not None and holder.owner == first.owner and holder.age_seconds() < 1.5
            with pytest.raises(LockError, match="is held by"):
                second.acquire()
        first.ensure_held()
    second.acquire()  # released: free at once
    second.release()


def test_the_heartbeat_notices_a_takeover(engine: Engine) -> None:
    import time

    lock = DatabaseLock(engine, "retrain", stale_after=0.3)
    lock.acquire()
    with session_scope(engine) as session:  # another process took it over as stale
        session.execute(update(Lock).where(Lock.name == "retrain").values(owner="elsewhere:1:cafe"))
    time.sleep(0.5)
    assert lock.lost
    with pytest.raises(LockError, match="no longer held"):
        lock.ensure_held()
    lock.release()  # must not delete the new holder's row
    assert holder_of(engine, "retrain").owner == "elsewhere:1:cafe"  # type: ignore[union-attr]
