from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from services.common.credentials import CredentialCipher, CredentialError
from services.common.passwords import PasswordError, hash_password, verify_password


def test_encrypt_round_trip_hides_plaintext() -> None:
    cipher = CredentialCipher([Fernet.generate_key().decode()])
    token = cipher.encrypt("s3cr3t-pw")
    assert "s3cr3t-pw" not in token
    assert cipher.decrypt(token) == "s3cr3t-pw"


def test_rotation_moves_tokens_to_the_newest_key() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = CredentialCipher([old]).encrypt("pw")
    rotated = CredentialCipher([new, old]).rotate(token)
    assert CredentialCipher([new]).decrypt(rotated) == "pw"
    with pytest.raises(CredentialError, match="cannot be decrypted"):
        CredentialCipher([new]).decrypt(token)


def test_passwords_hash_and_verify() -> None:
    hashed = hash_password("correct horse", rounds=4)
    assert hashed.startswith("$2b$04$")
    assert verify_password("correct horse", hashed)
    assert not verify_password("wrong horse", hashed)
    assert not verify_password("x" * 100, hashed)


@pytest.mark.parametrize("password", ["short", "é" * 40])
def test_password_policy(password: str) -> None:
    with pytest.raises(PasswordError):
        hash_password(password, rounds=4)
