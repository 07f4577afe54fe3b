"""Which periodic duties this process runs: one process of the grid at a time for each.

On a store only this process uses (SQLite) it runs them all. On a shared database
every process competes for each duty's lease row (:meth:`Store.hold_duty`): the
holder renews it each round, and when it dies or stalls past ``duty_ttl`` the next
process to ask takes over. A duty's work must stay safe to repeat (it is: reaping,
validation and sealing are idempotent and guarded in the store), since a stalled
holder may finish a round after its lease has passed on.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time

from coopgrid.store.base import Store

log = logging.getLogger(__name__)

#: expired leases reaped, the validation safety net, unfinished jobs reduced, old nonces purged
REAPER = "reaper"
#: epochs sealed and committed, escrows activated and closed, slashes sent
SEALER = "sealer"


class Duties:
    def __init__(self, store: Store, ttl: float, holder: str | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._held: set[str] = set()

    def lead(self, duty: str) -> bool:
        """Whether this process runs ``duty`` now (taking or renewing its lease)."""
        if not self.store.shared:
            return True
        held = self.store.hold_duty(duty, self.holder, self.ttl, time.time())
        if held and duty not in self._held:
            log.info("this process (%s) now leads the %s duty", self.holder, duty,
                     extra={"event": "duty_taken", "duty": duty, "holder": self.holder})
        elif not held and duty in self._held:
            log.warning("this process (%s) lost the %s duty to another process", self.holder, duty,
                        extra={"event": "duty_lost", "duty": duty, "holder": self.holder})
        (self._held.add if held else self._held.discard)(duty)
        return held

    def leads(self, duty: str) -> bool:
        """Whether this process led ``duty`` when it last asked (no database round trip)."""
        return not self.store.shared or duty in self._held

    def release(self) -> None:
        """Hand every duty back (a clean stop), so another process takes over without waiting out the lease."""
        for duty in sorted(self._held):
            try:
                self.store.release_duty(duty, self.holder)
            except Exception:  # noqa: BLE001 - the lease expires on its own
                log.warning("could not release the %s duty; it passes on in %.0fs", duty, self.ttl)
        self._held.clear()
