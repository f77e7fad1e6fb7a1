"""Settings read from the environment (prefix ``BM_``), built once in ``__main__``.

Every field here is listed in the README's settings table. Secrets are resolved by
:func:`services.common.secrets.resolve_secrets`, which refuses placeholders in
production and generates keys once in development.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.common.workers import available_cpus


class Mode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


MAX_AUTO_API_WORKERS = 4


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BM_", extra="ignore", frozen=True, validate_default=True
    )

    mode: Mode = Mode.DEVELOPMENT
    data_dir: Path = Path("data")
    database_url: str = ""
    nats_url: str = "nats://127.0.0.1:4222"
    storage_dir: Path | None = None

    credential_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    credential_keys_file: Path | None = None
    jwt_secret: SecretStr | None = None

    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT

    http_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=1, le=65535)
    scheduler_port: int = Field(default=8081, ge=1, le=65535)
    executor_port: int = Field(default=8082, ge=1, le=65535)
    storage_port: int = Field(default=8083, ge=1, le=65535)
    public_url: str = ""

    shutdown_grace_s: float = Field(default=30.0, ge=0)
    connect_retry_max_s: float = Field(default=10.0, gt=0)
    jobs_duplicate_window_s: float = Field(default=2 * 3600.0, gt=0)
    stream_replicas: int = Field(default=1, ge=1, le=5)
    executor_concurrency: int = Field(default=2, ge=1, le=64)
    job_ack_wait_s: float = Field(default=60.0, ge=1)
    stall_timeout_s: float = Field(default=600.0, gt=0)
    progress_interval_s: float = Field(default=2.0, gt=0)
    shrink_warning_fraction: float = Field(default=0.5, ge=0, le=1)
    connection_test_timeout_s: float = Field(default=10.0, gt=0)
    max_upload_bytes: int = Field(default=20 * 1024**3, ge=1024)
    verify_scratch: Literal["local", "source"] = "local"
    scheduler_grace_s: float = Field(default=3600.0, ge=0)
    scheduler_reconcile_s: float = Field(default=60.0, gt=0)
    scheduler_max_missed: int = Field(default=100, ge=1, le=10_000)
    failed_run_retention_days: int = Field(default=30, ge=0, le=36_500)
    storage_sweep_interval_s: float = Field(default=3600.0, gt=0)
    orphan_grace_s: float = Field(default=86400.0, ge=0)
    integrity_interval_s: float = Field(default=7 * 86400.0, ge=0)
    integrity_rate_bps: int = Field(default=20 * 1024 * 1024, ge=1)
    low_space_bytes: int = Field(default=1024**3, ge=0)
    low_space_fraction: float = Field(default=0.05, ge=0, le=1)

    allow_registration: bool = False
    access_token_ttl_s: int = Field(default=900, ge=30, le=86400)
    api_workers: int = Field(default=0, ge=0, le=64)
    """API processes sharing its port; 0: one per CPU it may use, at most 4."""
    api_auth_cache_s: float = Field(default=2.0, ge=0, le=60)
    api_stats_cache_s: float = Field(default=5.0, ge=0, le=3600)
    refresh_token_ttl_s: int = Field(default=30 * 86400, ge=300)
    login_max_attempts: int = Field(default=10, ge=1)
    login_window_s: int = Field(default=300, ge=1)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    local_destination_roots: Annotated[tuple[Path, ...], NoDecode] = ()

    admin_email: str = "admin@localhost"
    admin_password: SecretStr | None = None

    @field_validator("credential_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # Several keys for rotation: comma separated, newest first.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("local_destination_roots", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(part.strip()) for part in value.split(",") if part.strip())
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _grace_within_dedupe_window(self) -> Settings:
        # A slot may be published again up to the grace after its time (restart,
        # second replica): JetStream must still remember its message id then.
        if self.scheduler_grace_s >= self.jobs_duplicate_window_s:
            raise ValueError(
                f"BM_SCHEDULER_GRACE_S ({self.scheduler_grace_s:g}) must be less than "
                f"BM_JOBS_DUPLICATE_WINDOW_S ({self.jobs_duplicate_window_s:g}), or a slot "
                "fired again after a restart could be enqueued twice"
            )
        return self

    @model_validator(mode="after")
    def _defaults_in_data_dir(self) -> Settings:
        data_dir = self.data_dir.expanduser().absolute()
        object.__setattr__(self, "data_dir", data_dir)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite+aiosqlite:///{data_dir}/metadata.db")
        if self.storage_dir is None:
            object.__setattr__(self, "storage_dir", data_dir / "backups")
        if not self.local_destination_roots:
            object.__setattr__(self, "local_destination_roots", (self.storage_dir,))
        roots = tuple(root.expanduser().absolute() for root in self.local_destination_roots)
        object.__setattr__(self, "local_destination_roots", roots)
        if not self.public_url:
            local = {"0.0.0.0", "127.0.0.1", "::"}  # noqa: S104 - names, not a bind
            host = "localhost" if self.http_host in local else self.http_host
            object.__setattr__(self, "public_url", f"http://{host}:{self.api_port}")
        return self

    @property
    def is_production(self) -> bool:
        return self.mode is Mode.PRODUCTION

    @property
    def backups_dir(self) -> Path:
        assert self.storage_dir is not None  # set by the validator
        return self.storage_dir

    def api_worker_count(self) -> int:
        if self.api_workers:
            return self.api_workers
        return min(available_cpus(), MAX_AUTO_API_WORKERS)

    def port_of(self, service: str) -> int:
        ports = {
            "api": self.api_port,
            "scheduler": self.scheduler_port,
            "executor": self.executor_port,
            "storage": self.storage_port,
        }
        return ports[service]
