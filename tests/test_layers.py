"""The import-linter contracts cover every worker module, including new ones."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
WORKER_EXEMPT = {"__init__", "__main__", "contracts"}
SHARED_WITH_OPERATOR = {"krakenfeed.telemetry"}


def _worker_modules() -> set[str]:
    package = ROOT / "workers/krakenfeed"
    names = {p.stem for p in package.glob("*.py")} | {
        p.parent.name for p in package.glob("*/__init__.py")
    }
    return {f"krakenfeed.{name}" for name in names - WORKER_EXEMPT}


def _contracts() -> dict[str, dict[str, list[str]]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}


def test_the_operator_is_forbidden_every_worker_module() -> None:
    contract = _contracts()[
        "The operator reaches the workers only through the contracts and telemetry modules"
    ]
    missing = _worker_modules() - SHARED_WITH_OPERATOR - set(contract["forbidden_modules"])
    assert not missing, f"add {sorted(missing)} to the operator's forbidden_modules"


def test_no_worker_module_imports_the_operator() -> None:
    contract = _contracts()["The workers never import the operator"]
    missing = _worker_modules() - set(contract["source_modules"])
    assert not missing, f"add {sorted(missing)} to that contract's source_modules"


def test_the_module_shared_with_the_operator_imports_no_other_worker_module() -> None:
    contract = _contracts()[
        "Telemetry is shared with the operator: it imports no worker module but the contracts"
    ]
    missing = _worker_modules() - SHARED_WITH_OPERATOR - set(contract["forbidden_modules"])
    assert not missing, f"add {sorted(missing)} to that contract's forbidden_modules"
