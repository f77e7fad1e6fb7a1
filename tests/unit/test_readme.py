"""The README is where users look: every setting is in its table, and it opens with
the two commands that .ci/run relies on."""

from __future__ import annotations

from pathlib import Path

from services.common.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [
        f"BM_{name.upper()}"
        for name in Settings.model_fields
        if f"`BM_{name.upper()}`" not in readme
    ]
    assert not missing, f"settings missing from the README table: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    commands = [
        line.strip()
        for line in ci.splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "set ", "cd "))
    ]
    assert commands == ["./scripts/test"]
    first_blocks = readme.split("## Architecture")[0]
    assert "./scripts/run" in first_blocks
    assert "./scripts/test" in first_blocks
