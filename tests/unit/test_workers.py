"""How many API processes the default starts: one per CPU the process may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.common.settings import MAX_AUTO_API_WORKERS, Settings
from services.common.workers import available_cpus

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("max 100000\n", AFFINITY),  # no limit
        ("50000 100000\n", 1),  # half a CPU: still one process
        ("150000 100000\n", min(AFFINITY, 2)),  # 1.5 CPUs: two
        ("garbage\n", AFFINITY),  # unreadable: ignored
    ],
)
def test_a_container_cpu_limit_caps_the_count(tmp_path: Path, cpu_max: str, expected: int) -> None:
    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max)
    assert available_cpus(limit) == expected


def test_no_cgroup_file_means_the_cpus_it_may_run_on(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "missing") == AFFINITY


def test_the_setting_wins_over_the_default() -> None:
    assert Settings(api_workers=3).api_worker_count() == 3
    automatic = Settings(api_workers=0).api_worker_count()
    assert 1 <= automatic <= min(AFFINITY, MAX_AUTO_API_WORKERS)
