"""The images, their lock files, the dev loop and the cluster scripts, checked offline.

Building the images, running kind and pushing to GHCR happen only on GitHub's
runners (``.github/workflows/kind-e2e.yml`` and ``release.yml``); here the
Dockerfiles pass hadolint, the locks are held to ``pyproject.toml``, and the
YAML and shell around them pass yamllint and shellcheck.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy_tools import venv_tool

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGES = {
    # Dockerfile: (the extra it installs, its lock file)
    "docker/worker.Dockerfile": ("workers", "docker/workers.lock"),
    "docker/operator.Dockerfile": ("operator", "docker/operator.lock"),
}
IMAGE_ENVIRONMENT = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
"""The marker environment of the images' python:3.11-slim base on amd64."""
NOT_IN = {"workers": {"kopf", "kubernetes"}, "operator": {"quixstreams", "confluent-kafka"}}
"""Each image must not carry the other one's heavy dependencies."""


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)


# --- Dockerfiles -------------------------------------------------------------------------------


def test_dockerfiles_pass_hadolint() -> None:
    result = _run(str(venv_tool("hadolint")), "--failure-threshold", "info", *IMAGES)
    assert result.returncode == 0, result.stdout + result.stderr


def _stages(dockerfile: str) -> list[list[str]]:
    """Instructions per stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / dockerfile).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    stages: list[list[str]] = []
    for line in lines:
        if line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


@pytest.mark.parametrize("dockerfile", list(IMAGES))
def test_images_are_multi_stage_non_root_and_install_only_their_lock(dockerfile: str) -> None:
    _, lock = IMAGES[dockerfile]
    build, final = _stages(dockerfile)
    assert build[0].endswith(" AS build")
    # Build stage: the lock, with hashes, then the project without its dependencies.
    assert f"COPY {lock} /tmp/requirements.lock" in build
    installs = [line for line in build if " install " in line]
    assert any("--require-hashes -r /tmp/requirements.lock" in line for line in installs)
    assert all("--no-deps" in line for line in installs), "every dependency comes from the lock"
    assert any("pip check" in line for line in build)
    other_locks = {other for _, other in IMAGES.values()} - {lock}
    assert not any(other in line for line in build for other in other_locks)
    # Final stage: copies the venv, adds no packages, runs as the UID the operator expects.
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    assert "COPY --from=build /opt/krakenfeed /opt/krakenfeed" in final
    runs = [line for line in final if line.startswith("RUN")]
    assert not any(re.search(r"\b(apt-get|apk|pip)\b", line) for line in runs)
    assert final.count("USER 10001:10001") == 1
    assert [line for line in final if line.startswith("USER")] == ["USER 10001:10001"]


def test_the_uid_is_the_one_the_operator_runs_workers_as() -> None:
    from krakenfeed_operator.builders import POD_SECURITY

    assert POD_SECURITY["runAsUser"] == 10001
    assert POD_SECURITY["runAsGroup"] == 10001


def test_each_entrypoint_is_a_console_script_of_the_project() -> None:
    scripts = PYPROJECT["project"]["scripts"]
    for dockerfile in IMAGES:
        (entrypoint,) = [line for line in _stages(dockerfile)[-1] if line.startswith("ENTRYPOINT")]
        command = yaml.safe_load(entrypoint.removeprefix("ENTRYPOINT "))
        assert command[0] in scripts, f"{dockerfile}: {command} is not in [project.scripts]"
        module = scripts[command[0]].split(":")[0]
        path = ROOT / ("operator" if module.startswith("krakenfeed_operator") else "workers")
        assert (path / (module.replace(".", "/") + ".py")).is_file(), module


def test_the_build_context_holds_only_what_the_images_copy() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:6] == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!workers/",
        "!operator/",
        "!docker/*.lock",
    ]


# --- lock files --------------------------------------------------------------------------------


def _lock(path: str) -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes) of a hashed requirements lock."""
    text = (ROOT / path).read_text()
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s\\;]+)", block)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            pins[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return pins


def _requirements(extra: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"][extra]]
    return [r for r in map(Requirement, wanted) if _applies(r.marker, "")]


def _applies(marker: Marker | None, extra: str) -> bool:
    return marker is None or marker.evaluate({**IMAGE_ENVIRONMENT, "extra": extra})


@pytest.mark.parametrize("extra, lock", list(IMAGES.values()))
def test_the_lock_pins_every_runtime_dependency_within_its_range(extra: str, lock: str) -> None:
    pins = _lock(lock)
    assert len(pins) > 10
    assert all(hashes for _, hashes in pins.values()), "every pin carries its hashes"
    assert "krakenfeed" not in pins, "the project itself is installed from the build context"
    for requirement in _requirements(extra):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} lacks {requirement} from pyproject's [{extra}]"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{lock} pins {name}=={version}, outside pyproject's {requirement}: regenerate it"
        )
    assert not NOT_IN[extra] & pins.keys(), f"{lock} carries {NOT_IN[extra] & pins.keys()}"


@pytest.mark.parametrize("extra, lock", list(IMAGES.values()))
def test_the_lock_is_closed_under_its_packages_requirements(extra: str, lock: str) -> None:
    """Every requirement of every pinned package (and of the extras pyproject asks for,
    such as psycopg[binary]) is pinned too. Requirements are read from the metadata of
    the packages installed in this venv, which the [test] extra puts there."""
    pins = _lock(lock)
    wanted: list[tuple[str, str]] = [(name, "") for name in pins]
    wanted += [
        (canonicalize_name(r.name), extra_name)
        for r in _requirements(extra)
        for extra_name in r.extras
    ]
    checked = 0
    for name, extra_name in wanted:
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        checked += 1
        for text in requires:
            requirement = Requirement(text)
            if not _applies(requirement.marker, extra_name):
                continue
            assert canonicalize_name(requirement.name) in pins, (
                f"{lock}: {name}{'[' + extra_name + ']' if extra_name else ''} needs"
                f" {requirement}, which is not pinned: regenerate the lock"
            )
    assert checked >= len(pins) * 0.9, f"only {checked} of {len(pins)} packages could be checked"


@pytest.mark.parametrize("extra, lock", list(IMAGES.values()))
def test_the_lock_says_how_to_regenerate_it(extra: str, lock: str) -> None:
    header = (ROOT / lock).read_text().splitlines()[1]
    assert f"uv pip compile pyproject.toml --extra {extra} --python-version 3.11" in header
    assert f"--generate-hashes --annotation-style line -o {lock}" in header


# --- YAML, shell, skaffold, kind --------------------------------------------------------------


def test_repository_yaml_passes_yamllint() -> None:
    result = _run(str(venv_tool("yamllint")), "--strict", "-c", ".yamllint.yaml", ".")
    assert result.returncode == 0, result.stdout


def test_scripts_pass_shellcheck() -> None:
    scripts = ["dev", ".ci/run", *map(str, sorted((ROOT / "deploy").glob("*.sh")))]
    result = _run(str(venv_tool("shellcheck")), "--severity=style", *scripts)
    assert result.returncode == 0, result.stdout


def test_the_prerequisites_are_the_official_charts_at_pinned_versions() -> None:
    script = (ROOT / "deploy/install-prerequisites.sh").read_text()
    assert "helm repo add strimzi https://strimzi.io/charts/" in script
    assert "helm repo add cnpg https://cloudnative-pg.github.io/charts" in script
    assert re.search(r"STRIMZI_VERSION=\$\{STRIMZI_VERSION:-\d+\.\d+\.\d+\}", script)
    assert re.search(r"CNPG_CHART_VERSION=\$\{CNPG_CHART_VERSION:-\d+\.\d+\.\d+\}", script)
    # Strimzi watches only its own namespace unless told otherwise; the stack lives elsewhere.
    assert "--set watchAnyNamespace=true" in script
    assert script.count("--wait --timeout") == 2


def test_the_kind_cluster_is_described_by_kind_config() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == "krakenfeed"
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]


def test_skaffold_builds_both_images_and_deploys_the_stack() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"].startswith("skaffold/v4")
    artifacts = {a["image"]: a["docker"]["dockerfile"] for a in config["build"]["artifacts"]}
    assert artifacts == {
        "ghcr.io/krakenfeed/krakenfeed": "docker/worker.Dockerfile",
        "ghcr.io/krakenfeed/krakenfeed-operator": "docker/operator.Dockerfile",
    }
    (release,) = config["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    values = release["setValueTemplates"]
    for key in ("krakenfeed-operator.image", "krakenfeed-operator.workerImage", "replay.image"):
        assert f"{key}.repository" in values and f"{key}.tag" in values
    (kind,) = config["profiles"]
    kind_name = yaml.safe_load((ROOT / "kind-config.yaml").read_text())["name"]
    assert kind["activation"] == [{"kubeContext": f"kind-{kind_name}"}]
    assert kind["build"]["local"]["push"] is False


# --- README ------------------------------------------------------------------------------------


def test_readme_deploy_section_gives_the_exact_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy on Kubernetes") :]
    section = section[: section.index("\n## ", 1)]
    for command in (
        "kind create cluster --config kind-config.yaml",
        "deploy/install-prerequisites.sh",
        "helm install krakenfeed charts/krakenfeed-stack",
        "kubectl apply -n krakenfeed -f examples/",
        "get kf",
        "port-forward svc/krakenfeed-rw",
        "psql",
        "port-forward svc/krakenfeed-jaeger 16686:16686",
        "kubectl apply --server-side -f charts/krakenfeed-operator/crds/",
    ):
        assert command in section, command
