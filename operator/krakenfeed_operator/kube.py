"""The few Kubernetes API calls the reconciler makes, over aiohttp.

kopf watches and patches the KrakenFeeds itself; this adapter reads and writes
the children with the same credentials kopf logged in with (a
``kopf.ConnectionInfo``), without blocking the event loop and without the
weight of a generated client. Every write names the operator's field manager.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import kopf

from krakenfeed.contracts import API_VERSION, CRD_PLURAL
from krakenfeed_operator.builders import MANAGER

_PLURALS: Final = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "KafkaTopic": "kafkatopics",
    "Pod": "pods",
}
_APPLY: Final = "application/apply-patch+yaml"
_MERGE: Final = "application/merge-patch+json"


class KubeError(Exception):
    """The API server refused a request; the message says which and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def collection_path(api_version: str, plural: str, namespace: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


def object_path(manifest: dict[str, Any]) -> str:
    meta = manifest["metadata"]
    plural = _PLURALS[manifest["kind"]]
    return f"{collection_path(manifest['apiVersion'], plural, meta['namespace'])}/{meta['name']}"


class KubeApi:
    """Reads and writes children; ``connection`` returns kopf's current login."""

    def __init__(self, connection: Callable[[], kopf.ConnectionInfo | None]) -> None:
        self._connection = connection
        self._session: aiohttp.ClientSession | None = None
        self._info: kopf.ConnectionInfo | None = None
        self._closed = False

    async def _client(self) -> tuple[aiohttp.ClientSession, str]:
        if self._closed:
            # kopf runs cleanup before the last handlers finish; they must not
            # open a session that nobody would close.
            raise KubeError(503, "the operator is stopping")
        info = self._connection()
        if info is None:
            raise KubeError(401, "not logged in to the Kubernetes API yet")
        if self._session is None or info is not self._info:
            # First use, or a re-login replaced the credentials.
            await self._close_session()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
                headers={**info.as_http_headers(), "User-Agent": MANAGER},
                proxy=info.proxy_url,
                trust_env=info.trust_env,
            )
            self._info = info
        return self._session, info.server.rstrip("/")

    async def close(self) -> None:
        """Close the session for good: the operator is stopping."""
        self._closed = True
        await self._close_session()

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        session, server = await self._client()
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        async with session.request(
            method, server + path, data=data, headers=headers, params=params
        ) as response:
            if response.status == 404 and missing_ok:
                return None
            text = await response.text()
            if response.status >= 400:
                try:
                    reason = json.loads(text).get("message", text)
                except ValueError:
                    reason = text
                raise KubeError(response.status, f"{method} {path}: {response.status} {reason}")
            return json.loads(text) if text else None

    async def get(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The live object the manifest names, or None when it does not exist."""
        found: dict[str, Any] | None = await self._request(
            "GET", object_path(manifest), missing_ok=True
        )
        return found

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        plural = _PLURALS[manifest["kind"]]
        path = collection_path(manifest["apiVersion"], plural, meta["namespace"])
        created: dict[str, Any] = await self._request(
            "POST", path, body=manifest, params={"fieldManager": MANAGER}
        )
        return created

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's field manager, taking over
        fields that someone changed by hand."""
        applied: dict[str, Any] = await self._request(
            "PATCH",
            object_path(manifest),
            body=manifest,
            content_type=_APPLY,
            params={"fieldManager": MANAGER, "force": "true"},
        )
        return applied

    async def list(
        self, api_version: str, kind: str, namespace: str, selector: dict[str, str]
    ) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        path = collection_path(api_version, _PLURALS[kind], namespace)
        found = await self._request("GET", path, params={"labelSelector": label_selector})
        # Selectors are applied here too: not every API server honours them.
        return [
            item
            for item in found.get("items", [])
            if all(
                (item.get("metadata", {}).get("labels") or {}).get(k) == v
                for k, v in selector.items()
            )
        ]

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API server serves a resource (e.g. Strimzi's KafkaTopic)."""
        found = await self._request("GET", f"/apis/{api_version}", missing_ok=True)
        return found is not None and any(
            resource.get("name") == plural for resource in found.get("resources", [])
        )

    async def patch_feed_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        path = f"{collection_path(API_VERSION, CRD_PLURAL, namespace)}/{quote(name)}/status"
        await self._request(
            "PATCH",
            path,
            body={"status": status},
            content_type=_MERGE,
            params={"fieldManager": MANAGER},
        )
