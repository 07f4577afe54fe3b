"""What routes take from a request the edge has already checked: the caller, and ids in range.

The edge (:mod:`coopgrid.coordinator.edge`) authenticates every request from its
headers and leaves the result in the ASGI scope's state; routes read it here
rather than checking credentials again.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from coopgrid.coordinator.edge import STATE_SIGNED, STATE_TOKEN
from coopgrid.errors import AuthError
from coopgrid.protocol import MAX_ID
from coopgrid.store.base import Token

#: the largest id, index or epoch number the store can hold (a signed 64-bit integer)
Id = Annotated[int, Path(ge=1, le=MAX_ID, description="A positive 64-bit id.")]
Index = Annotated[int, Path(ge=0, le=MAX_ID, description="A task's index in its job (from 0).")]


def caller(request: Request) -> Token:
    """The caller's API token, checked by the edge from the Authorization header."""
    found = request.scope.get("state", {}).get(STATE_TOKEN)
    if found is None:
        raise AuthError()
    return found


TokenDep = Annotated[Token, Depends(caller)]


def signed_address(request: Request) -> str:
    """The worker address whose signature the edge checked, or AuthError."""
    signed = request.scope.get("state", {}).get(STATE_SIGNED)
    if signed is None:
        raise AuthError("worker requests must be signed (the x-coopgrid-* headers); see coopgrid.identity")
    return signed.address
