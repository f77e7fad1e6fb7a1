from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.settings import LogFormat, Mode, Settings


def test_defaults_live_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.mode is Mode.DEVELOPMENT
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/metadata.db"
    assert settings.backups_dir == tmp_path / "backups"
    assert settings.public_url == "http://localhost:8080"


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BM_LOG_FORMAT", "json")
    monkeypatch.setenv("BM_LOG_LEVEL", "debug")
    monkeypatch.setenv("BM_API_PORT", "9000")
    monkeypatch.setenv("BM_CREDENTIAL_KEYS", "k1, k2,")
    settings = Settings()
    assert settings.log_format is LogFormat.JSON
    assert settings.log_level == "DEBUG"
    assert settings.port_of("api") == 9000
    assert [key.get_secret_value() for key in settings.credential_keys] == ["k1", "k2"]
    assert "k1" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("BM_API_PORT", "70000"), ("BM_LOG_LEVEL", "LOUD"), ("BM_MODE", "staging")],
)
def test_bad_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("BM_").lower()):
        Settings()
