"""KMock's Kubernetes emulator on its own thread, and a small client for tests.

The emulator serves real HTTP on a free port from its own event loop, so the
operator under test (``kopf.testing.KopfRunner``, another thread) and the test
body (plain blocking code) talk to it exactly as to an API server. It runs no
controllers and no garbage collection: tests play the Deployment and KafkaTopic
controllers by patching ``status``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kmock
from kmock._internal import parsing

from krakenfeed.contracts import API_VERSION, CRD_KIND, CRD_PLURAL

RESOURCES: dict[str, dict[str, Any]] = {
    f"{API_VERSION}/{CRD_PLURAL}": {
        "kind": CRD_KIND,
        "namespaced": True,
        "shortnames": ["kf"],
        "subresources": ["status", "scale"],
    },
    "apps/v1/deployments": {"kind": "Deployment", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/pods": {"kind": "Pod", "namespaced": True},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
}
KAFKA_TOPICS = {
    "kafka.strimzi.io/v1beta2/kafkatopics": {"kind": "KafkaTopic", "namespaced": True},
}
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock 0.8 cannot parse /api/v1/namespaces[/name] (the namespaces
    themselves, which kopf lists and watches when it serves chosen namespaces)."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _kmock_parse_path(path)


class _ApiServer(kmock.KubernetesEmulator):
    """What an API server adds on creation and kmock does not: a uid, a
    resourceVersion, a generation, a creation time, and a name for
    ``generateName`` (kopf posts its Events that way)."""

    calls: list[tuple[str, str]]
    """(method, path and query) of every request, for tests that count them."""
    created: dict[str, float]
    """``time.monotonic()`` of each object's creation, by ``<plural>/<name>``."""

    async def _handle(self, request: kmock.Request) -> Any:
        # kmock keeps every request and matches each new one against that whole
        # history (quadratic: 0.2 s per request after 600); keep only this one.
        del self._requests[:-1]
        self.calls.append((request.method.value.upper(), request.url.path_qs))
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if "name" not in meta and "generateName" in meta:
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:10]
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("resourceVersion", "1")
            meta.setdefault("generation", 1)
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            if request.resource is not None:
                self.created[f"{request.resource.plural}/{meta['name']}"] = time.monotonic()
        return await super()._handle(request)


class Emulator:
    """A running ``kmock.KubernetesEmulator`` and blocking calls into it."""

    def __init__(self, namespaces: list[str], *, kafka_topics: bool) -> None:
        self.namespaces = namespaces
        self.kafka_topics = kafka_topics
        self.url = ""
        self.kmock: _ApiServer | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with _ApiServer() as emulator, kmock.Server(emulator) as server:
            emulator.calls = []
            emulator.created = {}
            resources = {**RESOURCES, **(KAFKA_TOPICS if self.kafka_topics else {})}
            for name, info in resources.items():
                emulator.resources[name] = {"verbs": VERBS, **info}
            self.kmock = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Emulator:
        parsing.parse_path = _parse_path
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the emulator did not start")
        for namespace in self.namespaces:
            self.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
        return self

    def __exit__(self, *_: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        parsing.parse_path = _kmock_parse_path

    def calls(self, method: str, path_prefix: str) -> int:
        """How many ``method`` requests for paths under ``path_prefix`` were served."""
        assert self.kmock is not None
        return sum(
            1
            for m, p in list(self.kmock.calls)
            if m.upper() == method.upper() and p.startswith(path_prefix)
        )

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "emulator",
                    "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "test"}}],
                    "contexts": [
                        {"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}
                    ],
                }
            )
        )
        return path

    # Blocking HTTP, as kubectl would do it.

    def request(self, method: str, path: str, body: Any = None, content: str = "") -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content or "application/json"}
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                exc.close()
                return None
            raise
        return json.loads(text) if text else None

    def create(self, collection: str, body: dict[str, Any]) -> Any:
        return self.request("POST", collection, body)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, body, "application/merge-patch+json")

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def items(self, collection: str) -> list[dict[str, Any]]:
        found = self.get(collection)
        return list(found["items"]) if found else []


@contextmanager
def emulator(namespaces: list[str], *, kafka_topics: bool = True) -> Iterator[Emulator]:
    with Emulator(namespaces, kafka_topics=kafka_topics) as running:
        yield running


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``check`` returns a truthy value (returned) or fail with its last result."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result:
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: last result {result!r}")
        time.sleep(interval)
        result = check()
    return result
