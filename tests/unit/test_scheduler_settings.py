"""The scheduler's settings: defaults, and a grace the jobs stream's duplicate window
must outlast (a slot may be published again up to the grace after its time)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.settings import Settings


def test_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert (settings.scheduler_grace_s, settings.scheduler_reconcile_s) == (3600.0, 60.0)
    assert settings.scheduler_max_missed == 100


def test_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BM_SCHEDULER_GRACE_S", "600")
    monkeypatch.setenv("BM_SCHEDULER_RECONCILE_S", "15")
    monkeypatch.setenv("BM_SCHEDULER_MAX_MISSED", "7")
    settings = Settings(data_dir=tmp_path)
    assert (settings.scheduler_grace_s, settings.scheduler_reconcile_s) == (600.0, 15.0)
    assert settings.scheduler_max_missed == 7


@pytest.mark.parametrize(("grace", "window"), [(7200, 7200), (3600, 1800)])
def test_a_grace_the_duplicate_window_does_not_outlast_is_refused(
    tmp_path: Path, grace: float, window: float
) -> None:
    with pytest.raises(ValidationError, match=r"BM_SCHEDULER_GRACE_S .* must be less than"):
        Settings(data_dir=tmp_path, scheduler_grace_s=grace, jobs_duplicate_window_s=window)


@pytest.mark.parametrize(
    ("field", "value"),
    [("scheduler_grace_s", -1), ("scheduler_reconcile_s", 0), ("scheduler_max_missed", 0)],
)
def test_out_of_range(tmp_path: Path, field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        Settings(data_dir=tmp_path, **{field: value})  # type: ignore[arg-type]
