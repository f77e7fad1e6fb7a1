"""Password hashing (bcrypt). bcrypt reads at most 72 bytes, so longer passwords are
refused instead of being silently truncated."""

from __future__ import annotations

import secrets

import bcrypt

MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_LENGTH = 8


class PasswordError(ValueError):
    pass


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise PasswordError(f"password must be at most {MAX_PASSWORD_BYTES} bytes")


def hash_password(password: str, *, rounds: int = 12) -> str:
    check_password_policy(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, password_hash.encode())
    except ValueError:
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(15)
