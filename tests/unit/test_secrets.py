"""Secrets: refused in production when missing or placeholders, generated once (0600)
in development and shared by every process of one data dir."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from services.common.errors import ConfigError
from services.common.secrets import (
    CREDENTIAL_KEYS_FILE,
    JWT_SECRET_FILE,
    resolve_secrets,
)
from services.common.settings import Settings

GOOD_JWT = "j" * 40


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BM_CREDENTIAL_KEYS", "BM_JWT_SECRET", "BM_MODE", "BM_CREDENTIAL_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)


def production(tmp_path: Path, **values: object) -> Settings:
    return Settings(mode="production", data_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_production_without_credential_keys_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BM_CREDENTIAL_KEYS is not set"):
        resolve_secrets(production(tmp_path, jwt_secret=GOOD_JWT))
    assert not (tmp_path / CREDENTIAL_KEYS_FILE).exists()


@pytest.mark.parametrize("placeholder", ["changeme", "CHANGE-ME", "placeholder", "secret"])
def test_production_refuses_placeholder_key(tmp_path: Path, placeholder: str) -> None:
    with pytest.raises(ConfigError, match="BM_CREDENTIAL_KEYS holds a placeholder"):
        resolve_secrets(production(tmp_path, credential_keys=placeholder, jwt_secret=GOOD_JWT))


def test_production_refuses_invalid_fernet_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="position 2 is not a valid Fernet key"):
        resolve_secrets(
            production(
                tmp_path,
                credential_keys=f"{Fernet.generate_key().decode()},not-a-key",
                jwt_secret=GOOD_JWT,
            )
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "missing"), ("changeme", "placeholder"), ("short-but-real", "too short")],
)
def test_production_jwt_secret_rules(tmp_path: Path, value: str | None, message: str) -> None:
    settings = production(
        tmp_path, credential_keys=Fernet.generate_key().decode(), jwt_secret=value
    )
    with pytest.raises(ConfigError, match=f"BM_JWT_SECRET .*{message}"):
        resolve_secrets(settings)


def test_production_accepts_real_secrets_and_keeps_key_order(tmp_path: Path) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secrets = resolve_secrets(
        production(tmp_path, credential_keys=f"{new}, {old}", jwt_secret=GOOD_JWT)
    )
    assert secrets.credential_keys == (new, old)
    assert GOOD_JWT not in repr(secrets)
    assert new not in repr(secrets)


def test_production_reads_key_file(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    key_file = tmp_path / "keys"
    key_file.write_text(f"# newest first\n{key}\n")
    secrets = resolve_secrets(
        production(tmp_path, credential_keys_file=key_file, jwt_secret=GOOD_JWT)
    )
    assert secrets.credential_keys == (key,)


def test_development_generates_once_0600_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path)
    first = resolve_secrets(settings)
    for name in (CREDENTIAL_KEYS_FILE, JWT_SECRET_FILE):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert "generated" in caplog.text
    assert CREDENTIAL_KEYS_FILE in caplog.text
    assert resolve_secrets(settings) == first
    Fernet(first.credential_keys[0].encode())  # a usable key


def test_development_generation_has_one_winner_under_concurrency(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: resolve_secrets(settings), range(16)))
    assert len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CREDENTIAL_KEYS_FILE, JWT_SECRET_FILE]
    )
