"""Token primitives: short-lived access JWTs, and opaque random tokens (refresh and
API tokens) of which only a SHA-256 hash is stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

import jwt

ALGORITHM = "HS256"
ISSUER = "backupmanager"
ACCESS_TYPE = "access"
REFRESH_PREFIX = "bmr_"
API_TOKEN_PREFIX = "bmt_"  # noqa: S105 - a prefix, not a secret


class InvalidToken(Exception):
    """The token is malformed, expired or not signed by us (message safe to show)."""


def issue_access_token(user_id: uuid.UUID, *, secret: str, now: datetime, ttl_s: int) -> str:
    claims = {
        "sub": str(user_id),
        "typ": ACCESS_TYPE,
        "iss": ISSUER,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_s)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, *, secret: str, now: datetime) -> tuple[uuid.UUID, datetime]:
    """The user id and expiry of a valid access token; InvalidToken otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={
                "require": ["exp", "iat", "sub", "typ"],
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError:
        raise InvalidToken("invalid access token") from None
    # Only expiry is checked, against our clock (injectable in tests), not PyJWT's
    # wall clock; an issue time ahead of our clock just means skewed clocks.
    if claims.get("typ") != ACCESS_TYPE:
        raise InvalidToken("not an access token")
    try:
        expires = int(claims["exp"])
    except (TypeError, ValueError):
        raise InvalidToken("invalid access token") from None
    if expires <= now.timestamp():
        raise InvalidToken("access token expired")
    try:
        return uuid.UUID(str(claims["sub"])), datetime.fromtimestamp(expires, UTC)
    except ValueError:
        raise InvalidToken("invalid access token") from None


def new_opaque_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """SHA-256 hex: the tokens are 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()
