"""The tenant registry: the one place a tenant is defined (its Kafka principal, region and tier).

`home/tenants.json` (0600). A tenant submits over HTTP with an API key (`var/api-keys.json`) or straight to Kafka
on its own topic `requests.<tenant>` as principal `tenant-<tenant>`, which only it may write; ingress takes the
tenant from the topic and the region/tier from here, never from the request body.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hallmark.tenant_keys import TenantKeys

TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
REQUESTS = "requests"
DEV_TENANT = "dev"


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    region: str = "default"
    tier: str = "standard"
    shredded: bool = False  # its prompt keys were deleted: it can submit nothing more

    @property
    def principal(self) -> str:
        return f"tenant-{self.tenant_id}"

    @property
    def topic(self) -> str:
        return f"{REQUESTS}.{self.tenant_id}"


def tenant_of_topic(topic: str) -> str | None:
    """The tenant whose submission topic this is (`requests.<tenant>`), None for any other topic."""
    prefix = f"{REQUESTS}."
    return topic[len(prefix):] if topic.startswith(prefix) and TENANT_ID.match(topic[len(prefix):]) else None


@dataclass
class TenantRegistry:
    """Tenants from `path`; re-read when the file changes, so long-running stages see new tenants."""

    path: Path
    tenants: dict[str, Tenant]
    _mtime: float = 0.0

    @classmethod
    def load(cls, path: Path) -> "TenantRegistry":
        path = Path(path)
        if not path.exists():
            registry = cls(path, {DEV_TENANT: Tenant(DEV_TENANT)})
            registry.save()
            return registry
        return cls(path, _read(path), path.stat().st_mtime)

    def refresh(self) -> "TenantRegistry":
        mtime = self.path.stat().st_mtime if self.path.exists() else 0.0
        if mtime != self._mtime:
            self.tenants, self._mtime = _read(self.path), mtime
        return self

    def get(self, tenant_id: str) -> Tenant | None:
        return self.refresh().tenants.get(tenant_id)

    def add(self, tenant: Tenant) -> Tenant:
        if not TENANT_ID.match(tenant.tenant_id):
            raise ValueError("tenant ids are 1–48 characters: lower-case letters, digits and '-', not first")
        if tenant.tenant_id in self.refresh().tenants:
            raise ValueError(f"tenant {tenant.tenant_id!r} exists")
        self.tenants[tenant.tenant_id] = tenant
        self.save()
        return tenant

    def mark_shredded(self, tenant_id: str) -> Tenant:
        tenant = self.refresh().tenants[tenant_id]
        self.tenants[tenant_id] = replace(tenant, shredded=True)
        self.save()
        return self.tenants[tenant_id]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"tenants": [asdict(t) for t in sorted(self.tenants.values(), key=lambda t: t.tenant_id)]},
                      f, indent=2)
        os.replace(tmp, self.path)
        self._mtime = self.path.stat().st_mtime


def with_tenant_topics(topics, tenants_file: Path) -> list[str]:
    """These topics and, where `requests` is one, every registered tenant's `requests.<tenant>`."""
    topics = list(topics)
    if REQUESTS in topics:
        topics += sorted(t.topic for t in TenantRegistry.load(tenants_file).tenants.values())
    return topics


def tenant_keys(config) -> "TenantKeys":
    """The tenants' prompt keys, wrapped under the master key file (or `config.master_key`)."""
    from hallmark.tenant_keys import FileKeyWrap, TenantKeys

    return TenantKeys(config.keys_dir / "tenants", FileKeyWrap(config.master_key or config.keys_dir / "master.key"))


def open_registry(config) -> TenantRegistry:
    """The registry, with a prompt key pair for every tenant that is not shredded (the first start makes `dev`)."""
    registry, keys = TenantRegistry.load(config.tenants_file), tenant_keys(config)
    for tenant in registry.tenants.values():
        if not tenant.shredded:
            keys.create(tenant.tenant_id)
    return registry


def _read(path: Path) -> dict[str, Tenant]:
    data = json.loads(path.read_text())
    tenants = [Tenant(**t) for t in data.get("tenants", [])] if isinstance(data, dict) else None
    if tenants is None or not all(TENANT_ID.match(t.tenant_id) for t in tenants):
        raise ValueError(f"{path}: expected {{\"tenants\": [{{\"tenant_id\", \"region\", \"tier\"}}]}}")
    return {t.tenant_id: t for t in tenants}
