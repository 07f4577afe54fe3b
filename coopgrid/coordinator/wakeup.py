"""Waking idle workers' long polls when work may have appeared.

An idle worker's lease request may ask to wait (``LeaseRequest.wait``); the
route then holds it on a :class:`Wakeup` until something that can make work
happens (a job created, replicas released or issued, expired leases reaped)
or the wait runs out, and asks the store again. A wake-up is only a hint to
look: the store decides what is leased, so a spurious one costs one cheap
query, and a missed one is caught by the periodic re-check the route does
anyway (``RECHECK`` seconds).

With PostgreSQL, several coordinator processes share one queue: a process
that creates work also says so with ``NOTIFY`` and every process ``LISTEN``s
on its own connection (as procrastinate and Oban do), so a job posted to one
process wakes the workers waiting on another.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "coopgrid_work"
#: a held lease request looks at the queue at least this often, whatever it was told
RECHECK = 2.0


class Wakeup:
    """A generation counter that any thread may bump and the event loop's waiters await."""

    def __init__(self, engine: Any = None) -> None:
        self._engine = engine if engine is not None and engine.dialect.name == "postgresql" else None
        self._lock = threading.Lock()
        self._generation = 0
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        #: set while this process listens for other processes' notifications (PostgreSQL only)
        self.listening = threading.Event()

    # -- the event loop's side ----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the serving loop; on PostgreSQL, start listening for other processes' work."""
        self._loop = loop
        if self._engine is not None and self._listener is None:
            self._listener = threading.Thread(target=self._listen_forever, name="wakeup-listen", daemon=True)
            self._listener.start()

    @property
    def generation(self) -> int:
        """Read before looking at the queue; :meth:`wait` returns at once if it has moved since."""
        return self._generation

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait(self, since: int, timeout: float, *also: asyncio.Future[Any]) -> None:
        """Until the generation moves past ``since``, ``timeout`` passes, one of ``also`` is done, or closing."""
        if self._closed or self._generation != since or timeout <= 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            if self._generation != since:  # bumped between the check and the registration
                return
            await asyncio.wait({fut, *also}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiters.discard(fut)
            fut.cancel()

    def close(self) -> None:
        """Release every held request now (the server is stopping) and hold none from here on."""
        self._closed = True
        self._stop.set()
        self._bump()

    # -- any thread ---------------------------------------------------------------------

    def notify(self, others: bool = False) -> None:
        """Work may have appeared: wake this process's waiters (and, with ``others``, every process's)."""
        if others and self._engine is not None:
            try:
                with self._engine.begin() as conn:
                    conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
            except Exception as exc:  # a hint only: the other processes' re-check finds the work anyway
                log.debug("NOTIFY failed: %s", exc)
        self._bump()

    def _bump(self) -> None:
        with self._lock:
            self._generation += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake_all)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _wake_all(self) -> None:
        for fut in list(self._waiters):
            if not fut.done():
                fut.set_result(None)

    # -- PostgreSQL ---------------------------------------------------------------------

    def _listen_forever(self) -> None:
        import psycopg

        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.5
                    self.listening.set()
                    self._bump()  # anything posted while not listening is looked for now
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._bump()
            except Exception as exc:  # the database restarting: listen again once it is back
                self.listening.clear()
                log.debug("LISTEN %s: %s; again in %.1fs", CHANNEL, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
