"""Database credentials encrypted at rest with MultiFernet: the first key encrypts,
every key decrypts, and ``rotate`` re-encrypts a token under the newest key."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from services.common.errors import BackupManagerError


class CredentialError(BackupManagerError):
    code = "credential_error"


class CredentialCipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise CredentialError("no credential key configured")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise CredentialError(
                "a stored credential cannot be decrypted with the configured keys "
                "(was a key removed from BM_CREDENTIAL_KEYS?)"
            ) from None

    def rotate(self, token: str) -> str:
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise CredentialError("a stored credential cannot be decrypted for rotation") from None
