"""The GitHub Actions workflows: actionlint (with shellcheck on every run: block) and
what each workflow promises. They run only on GitHub's runners; these checks are
what this machine can verify of them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import KAFKA_OVERRIDE, POSTGRES_OVERRIDE
from tests.deploy_tools import venv_tool

ROOT = Path(__file__).parents[1]
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))


def _load(name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load((ROOT / ".github/workflows" / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True)
    return workflow


def _run_lines(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_every_workflow_passes_actionlint() -> None:
    expected = {"ci.yml", "integration.yml", "kind-e2e.yml", "release.yml"}
    assert {p.name for p in WORKFLOWS} >= expected
    result = subprocess.run(
        [str(venv_tool("actionlint")), "-shellcheck", str(venv_tool("shellcheck")), *WORKFLOWS],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_workflow_pins_actions_sets_timeouts_and_a_concurrency_group(path: Path) -> None:
    workflow = _load(path.name)
    assert workflow["concurrency"]["group"].startswith(f"{path.stem}-${{{{ github.ref }}}}")
    assert "permissions" in workflow, "least-privilege GITHUB_TOKEN"
    for name, job in workflow["jobs"].items():
        assert 0 < job["timeout-minutes"] <= 60, name
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+\.\d+\.\d+", step["uses"]), step["uses"]


def test_ci_runs_the_readme_test_command() -> None:
    (job,) = _load("ci.yml")["jobs"].values()
    assert ".ci/run" in _run_lines(job)
    assert (ROOT / ".ci/run").read_text().rstrip().endswith("exec ./dev test")


def test_integration_runs_the_suite_against_kafka_and_postgres_services() -> None:
    (job,) = _load("integration.yml")["jobs"].values()
    assert job["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert job["services"]["postgres"]["image"].startswith("postgres:")
    assert job["env"][KAFKA_OVERRIDE] == "127.0.0.1:9092"
    assert job["env"][POSTGRES_OVERRIDE].startswith("postgresql://postgres:")
    assert "./dev test" in _run_lines(job)


def test_kind_e2e_walks_the_issue_steps_in_order() -> None:
    workflow = _load("kind-e2e.yml")
    (job,) = workflow["jobs"].values()
    names = [step.get("name", "") for step in job["steps"]]
    numbered = [name for name in names if re.match(r"\d\. ", name)]
    assert [name[0] for name in numbered] == list("1234567")
    (kind,) = [s for s in job["steps"] if s.get("uses", "").startswith("helm/kind-action@")]
    assert kind["with"]["config"] == "kind-config.yaml"
    cluster = yaml.safe_load((ROOT / "kind-config.yaml").read_text())["name"]
    assert kind["with"]["cluster_name"] == cluster
    script = _run_lines(job)
    for needle in (
        "deploy/install-prerequisites.sh",
        "kind load docker-image",
        "helm install krakenfeed charts/krakenfeed-stack",
        "--for=condition=Ready",
        "python -m tests.deploy_checks --timeout-s 600 anomalies",
        "python -m tests.deploy_checks --timeout-s 300 traces",
    ):
        assert needle in script, needle
    # The example it applies is a KrakenFeed of that name that reads a local Kraken.
    env = workflow["env"]
    docs = list(yaml.safe_load_all((ROOT / env["EXAMPLE"]).read_text()))
    (feed,) = [doc for doc in docs if doc and doc["kind"] == "KrakenFeed"]
    assert feed["metadata"]["name"] == env["FEED"]
    assert all(source["url"].startswith("ws://") for source in feed["spec"]["sources"])
    dump = job["steps"][-1]
    assert dump["if"] == "failure()" and "deploy/dump-diagnostics.sh" in dump["run"]


def test_release_pushes_both_images_and_both_charts_on_a_version_tag() -> None:
    workflow = _load("release.yml")
    assert workflow["on"] == {"push": {"tags": ["v*.*.*"]}}
    assert workflow["permissions"] == {"contents": "read", "packages": "write"}
    images = workflow["jobs"]["images"]["strategy"]["matrix"]["include"]
    assert {(i["image"], i["dockerfile"]) for i in images} == {
        ("krakenfeed", "docker/worker.Dockerfile"),
        ("krakenfeed-operator", "docker/operator.Dockerfile"),
    }
    steps = workflow["jobs"]["images"]["steps"]
    (build,) = [s for s in steps if "build-push-action" in s.get("uses", "")]
    assert build["with"]["push"] is True
    charts = _run_lines(workflow["jobs"]["charts"])
    assert "helm package charts/krakenfeed-operator" in charts
    assert "helm package charts/krakenfeed-stack" in charts
    assert 'helm push "$chart" "oci://ghcr.io/${owner}/charts"' in charts
