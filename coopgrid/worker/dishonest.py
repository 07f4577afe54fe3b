"""TEST FACILITY: dishonest worker behaviours, for tests, benchmarks and the demo.

A real volunteer grid has broken, lazy and malicious nodes; the trust layer
must catch them. ``coopgrid worker --dishonest MODE`` makes a worker
misbehave on purpose so that this can be shown and measured:

* ``random``: a random wrong output for every task;
* ``constant``: the same wrong output for every task of a shape;
* ``lazy``: returns its previous output without computing (a stale result);
* ``cheat:S``: a random wrong output on a fraction S of its tasks, honest otherwise;
* ``collude:GROUP[:S]``: members of GROUP return the same wrong output for the
  same input (on a fraction S of tasks, default all), so they agree with each other.

Wrong outputs keep the shape of the real ones (same keys, lengths, types), so
they pass format checks and are caught only by validation.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

MODES = ("random", "constant", "lazy", "cheat", "collude")


class Behaviour:
    """Honest: compute and return."""

    name = "honest"

    def output(self, input_hash: str, compute: Callable[[], Any]) -> Any:
        return compute()


class Dishonest(Behaviour):
    def __init__(self, mode: str, rate: float = 1.0, group: str = "", seed: int | None = None) -> None:
        self.name = mode
        self.mode = mode
        self.rate = rate
        self.group = group
        self.rng = random.Random(seed)
        self._last: Any = None

    def output(self, input_hash: str, compute: Callable[[], Any]) -> Any:
        if self.mode == "lazy":
            if self._last is None:
                self._last = compute()
            return self._last  # stale: the answer to some earlier task
        real = compute()
        if self.rng.random() >= self.rate:
            return real
        if self.mode == "constant":
            return corrupt(real, random.Random(0))
        if self.mode == "collude":
            seed = int.from_bytes(hashlib.sha256(f"{self.group}:{input_hash}".encode()).digest()[:8], "big")
            return corrupt(real, random.Random(seed))
        return corrupt(real, self.rng)


def corrupt(value: Any, rng: random.Random) -> Any:
    """A wrong value of the same shape: every number changed, bytes and text replaced."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.randint(1, 1000)
    if isinstance(value, float):
        return value + rng.uniform(0.5, 2.0)
    if isinstance(value, (bytes, bytearray)):
        return bytes(rng.getrandbits(8) for _ in range(len(value))) if value else b"\x00"
    if isinstance(value, str):
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(max(len(value), 1)))
    if isinstance(value, dict):
        return {k: corrupt(v, rng) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(corrupt(v, rng) for v in value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy arrays
        import numpy as np

        noise = np.asarray([rng.uniform(0.5, 2.0) for _ in range(value.size)]).reshape(value.shape)
        return (value + noise).astype(value.dtype)
    return value


def parse(spec: str | None, seed: int | None = None) -> Behaviour:
    """``random``, ``constant``, ``lazy``, ``cheat:0.3``, ``collude:team`` or ``collude:team:0.5``."""
    if not spec:
        return Behaviour()
    mode, _, rest = spec.partition(":")
    if mode not in MODES:
        raise ValueError(f"unknown dishonest mode {mode!r}; one of {', '.join(MODES)}")
    if mode == "cheat":
        return Dishonest("cheat", rate=_rate(rest or "0.5"), seed=seed)
    if mode == "collude":
        group, _, rate = rest.partition(":")
        if not group:
            raise ValueError("collude needs a group name: collude:GROUP[:RATE]")
        return Dishonest("collude", rate=_rate(rate or "1"), group=group, seed=seed)
    return Dishonest(mode, seed=seed)


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a fraction between 0 and 1") from None
    if not 0 <= rate <= 1:
        raise ValueError(f"{text!r} is not a fraction between 0 and 1")
    return rate
