"""Named locks shared by every process that reaches the database (the ``locks`` table).

Acquiring inserts a row whose primary key is the lock name, so the database itself decides who
wins: a second insert fails. A lock whose holder died is taken over: at once when the holder ran on
this host and its process is gone, otherwise once it is older than ``stale_after`` seconds.

While a lock is held, a heartbeat thread renews its time every ``stale_after / 3`` seconds, so a
job that runs longer than ``stale_after`` keeps its lock; only a holder that stopped beating
(killed, frozen, cut off from the database) goes stale.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import psutil
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from recsys.db.engine import session_scope
from recsys.db.models import Lock
from recsys.errors import LockError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: ``owner`` is ``host:pid:token``, one token per acquisition."""

    name: str
    owner: str
    acquired_at: datetime

    @property
    def host(self) -> str:
        return self.owner.split(":", 1)[0]

    @property
    def pid(self) -> int | None:
        parts = self.owner.split(":")
        return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None

    def age_seconds(self, now: datetime | None = None) -> float:
        return ((now or _utcnow()) - self.acquired_at).total_seconds()


class DatabaseLock:
    """A named lock held in the database; use as a context manager or call acquire/release.

    ``stale_after`` (seconds) is how old a lock must be before another host may take it over;
    callers pass ``settings.lock_stale_seconds``.
    """

    def __init__(self, engine: Engine, name: str, *, stale_after: float) -> None:
        if not name or len(name) > 64:
            raise LockError(f"lock names have 1 to 64 characters, got {name!r}")
        if stale_after <= 0:
            raise LockError(f"stale_after must be positive, got {stale_after}")
        self.engine = engine
        self.name = name
        self.stale_after = stale_after
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.held = False
        self.lost = False  # set by the heartbeat when another process took the lock over
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> None:
        """Take the lock or raise LockError naming the holder; a stale lock is taken over."""
        if self.held:
            raise LockError(f"lock {self.name!r} is already held by this object ({self.owner})")
        if self._try_insert():
            return
        holder = holder_of(self.engine, self.name)
        if holder is not None and self._is_stale(holder):
            logger.warning(
                "taking over stale lock %r held by %s since %s", self.name, holder.owner, holder.acquired_at
            )
            # Delete exactly the stale row we looked at: if another process took it over first,
            # the owner differs, nothing is deleted and our insert below fails cleanly.
            with session_scope(self.engine) as session:
                session.execute(delete(Lock).where(Lock.name == self.name, Lock.owner == holder.owner))
            if self._try_insert():
                return
            holder = holder_of(self.engine, self.name)
        if holder is None:  # released between our insert and our look-up
            if self._try_insert():
                return
            holder = holder_of(self.engine, self.name)
        since = holder.acquired_at.isoformat(timespec="seconds") if holder else "?"
        raise LockError(
            f"lock {self.name!r} is held by {holder.owner if holder else 'another process'} since "
            f"{since}; wait for it to finish (a lock older than {self.stale_after:.0f} s is taken "
            f"over automatically)"
        )

    def release(self) -> None:
        """Give the lock back; only this holder's row is deleted."""
        self._stop_heartbeat()
        if not self.held:
            return
        with session_scope(self.engine) as session:
            session.execute(delete(Lock).where(Lock.name == self.name, Lock.owner == self.owner))
        self.held = False

    def ensure_held(self) -> None:
        """Raise LockError when the heartbeat found the lock taken over (call before committing
        to something only the holder may do, such as promoting a version)."""
        if self.lost or not self.held:
            raise LockError(f"lock {self.name!r} is no longer held by {self.owner}")

    def refresh(self) -> None:
        """Renew the acquisition time so a long job's lock does not look stale."""
        if not self.held:
            raise LockError(f"lock {self.name!r} is not held by {self.owner}")
        with session_scope(self.engine) as session:
            result = session.execute(
                update(Lock)
                .where(Lock.name == self.name, Lock.owner == self.owner)
                .values(acquired_at=_utcnow())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                self.held = False
                raise LockError(f"lock {self.name!r} was taken over from {self.owner} as stale")

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def _try_insert(self) -> bool:
        try:
            with session_scope(self.engine) as session:
                session.execute(insert(Lock).values(name=self.name, owner=self.owner, acquired_at=_utcnow()))
        except IntegrityError:
            return False
        self.held = True
        self._start_heartbeat()
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name=f"lock-heartbeat-{self.name}", daemon=True)
        self._heartbeat.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join()
        self._heartbeat = None

    def _beat(self) -> None:
        interval = self.stale_after / 3
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except LockError as exc:
                self.lost = True
                logger.error("%s; the job holding it should stop", exc)
                return
            except Exception as exc:  # database away for a moment: try again next beat
                logger.warning("could not refresh lock %r: %s", self.name, exc)

    def _is_stale(self, holder: LockHolder) -> bool:
        if holder.age_seconds() > self.stale_after:
            return True
        # On this host we can tell for sure whether the holder is still running.
        same_host = holder.host == socket.gethostname()
        return same_host and holder.pid is not None and not psutil.pid_exists(holder.pid)


def holder_of(engine: Engine, name: str) -> LockHolder | None:
    """The current holder of lock ``name``, or None when it is free."""
    with session_scope(engine) as session:
        row = session.execute(select(Lock.owner, Lock.acquired_at).where(Lock.name == name)).first()
    if row is None:
        return None
    return LockHolder(name=name, owner=row.owner, acquired_at=_as_utc(row.acquired_at))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time recsys writes is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
