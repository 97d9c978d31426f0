"""Each tenant's webhook endpoints and the secret of its jobs' own webhook URLs, in one shared document."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass
from typing import Any

from inkloop import errors
from inkloop_gateway.nudges.documents import DocumentStore
from inkloop_gateway.webhooks.targets import Targets

EVENT_TYPES = ("job.succeeded", "job.failed", "job.cancelled")
MAX_ENDPOINTS = 20


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...]  # empty = every type
    secret: str
    created_at: float

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class EndpointBook:
    def __init__(self, documents: DocumentStore, targets: Targets) -> None:
        self.documents = documents
        self.targets = targets

    async def create(self, tenant_id: str, url: str, event_types: tuple[str, ...]) -> Endpoint:
        self.targets.check_url(url, "url")
        unknown = [name for name in event_types if name not in EVENT_TYPES]
        if unknown:
            raise errors.InvalidArgument("event_types", f"unknown event types {unknown}")
        document = await self._document(tenant_id)
        if len(document["endpoints"]) >= MAX_ENDPOINTS:
            raise errors.FailedPrecondition(f"a tenant may register at most {MAX_ENDPOINTS} webhook endpoints")
        endpoint = Endpoint(f"ep_{secrets.token_hex(8)}", url, tuple(event_types), new_secret(), time.time())
        document["endpoints"].append(_to_json(endpoint))
        await self.documents.put(_name(tenant_id), document)
        return endpoint

    async def list(self, tenant_id: str) -> list[Endpoint]:
        return [_from_json(item) for item in (await self._document(tenant_id))["endpoints"]]

    async def get(self, tenant_id: str, endpoint_id: str) -> Endpoint | None:
        return next((e for e in await self.list(tenant_id) if e.endpoint_id == endpoint_id), None)

    async def delete(self, tenant_id: str, endpoint_id: str) -> None:
        document = await self._document(tenant_id)
        kept = [item for item in document["endpoints"] if item["endpoint_id"] != endpoint_id]
        if len(kept) == len(document["endpoints"]):
            raise errors.NotFound(f"tenant {tenant_id!r} has no webhook endpoint {endpoint_id!r}")
        document["endpoints"] = kept
        await self.documents.put(_name(tenant_id), document)

    async def job_secret(self, tenant_id: str) -> str:
        """The secret that signs deliveries to jobs' own URLs; made on first use."""
        document = await self._document(tenant_id)
        if not document.get("job_secret"):
            document["job_secret"] = new_secret()
            await self.documents.put(_name(tenant_id), document)
        return str(document["job_secret"])

    async def _document(self, tenant_id: str) -> dict[str, Any]:
        return await self.documents.get(_name(tenant_id)) or {"endpoints": [], "job_secret": ""}


def _name(tenant_id: str) -> str:
    return f"webhooks:{tenant_id}"


def _to_json(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint.endpoint_id,
        "url": endpoint.url,
        "event_types": list(endpoint.event_types),
        "secret": endpoint.secret,
        "created_at": endpoint.created_at,
    }


def _from_json(data: dict[str, Any]) -> Endpoint:
    return Endpoint(
        data["endpoint_id"], data["url"], tuple(data["event_types"]), data["secret"], float(data["created_at"])
    )
