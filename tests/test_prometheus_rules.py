"""The shipped Prometheus rules parse (promtool check) and fire when they should (promtool test).

CI installs Debian's `prometheus` package (see .ci/run); elsewhere these skip without promtool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "prometheus"
PROMTOOL = shutil.which("promtool")
requires_promtool = pytest.mark.skipif(
    PROMTOOL is None and not os.environ.get("CI"),
    reason="promtool not installed (apt-get install prometheus)",
)


@requires_promtool
def test_promtool_check_rules_accepts_every_rule_file() -> None:
    files = sorted(CONFIGS.glob("*rules*.yml"))
    assert files, "no rule files shipped"
    out = subprocess.run(
        [PROMTOOL or "promtool", "check", "rules", *map(str, files)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@requires_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    tests = sorted((CONFIGS / "tests").glob("*.yml"))
    assert tests
    out = subprocess.run(
        [PROMTOOL or "promtool", "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        cwd=CONFIGS / "tests",
    )
    assert out.returncode == 0, out.stdout + out.stderr
