"""Who is calling: a bearer token from ``http.api_tokens`` names the caller, and that name is the
actor of everything the request does (invariant 9). Nothing a request says can change it."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Callable

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer


@dataclass(frozen=True)
class ApiToken:
    name: str       # who holds it: the actor of what it does
    token: str


def bearer_actor(tokens: list[ApiToken]) -> Callable[..., str]:
    """A FastAPI dependency returning the calling token's name, or answering 401."""
    known = [(t.name, t.token.encode()) for t in tokens if t.token]
    # HTTPBearer parses the header and declares the scheme in the OpenAPI document; the token
    # check stays ours, so every refusal is a 401 with WWW-Authenticate.
    scheme = HTTPBearer(auto_error=False, description="a token from http.api_tokens")

    def actor(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> str:
        if credentials is None:
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        offered = credentials.credentials.encode()
        # Compare against every token, always, so timing says nothing about which one nearly matched.
        matches = [name for name, token in known if hmac.compare_digest(offered, token)]
        if not matches:
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        return matches[0]

    return actor
