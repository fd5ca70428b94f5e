"""API keys → tenants, from `var/api-keys.json`; the first start writes one development key."""
from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DEV_TENANT = "dev"


@dataclass(frozen=True)
class ApiKeys:
    """`{"keys": {"<key>": "<tenant id>", …}}`; edit the file to add tenants (restart the API to reload)."""

    path: Path
    keys: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> "ApiKeys":
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"keys": {f"hm_dev_{secrets.token_urlsafe(24)}": DEV_TENANT}}, f, indent=2)
        data = json.loads(path.read_text())
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
            raise ValueError(f"{path}: expected {{\"keys\": {{\"<key>\": \"<tenant>\"}}}}")
        return cls(path, keys)

    def tenant(self, key: str) -> str | None:
        """The tenant of `key`, compared in constant time; None for a missing or unknown key."""
        found = None
        for known, tenant in self.keys.items():
            if key and hmac.compare_digest(known.encode(), key.encode()):
                found = tenant
        return found

    def add(self, tenant: str) -> str:
        """A new key for `tenant`, saved at once (0600); the API reads the file when it starts."""
        key = f"hm_{secrets.token_urlsafe(24)}"
        self.keys[key] = tenant
        self._save()
        return key

    def revoke(self, tenant: str) -> int:
        """Remove every key of `tenant`; returns how many there were."""
        gone = [k for k, t in self.keys.items() if t == tenant]
        for key in gone:
            del self.keys[key]
        self._save()
        return len(gone)

    def _save(self) -> None:
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": self.keys}, f, indent=2)
        os.replace(tmp, self.path)

    def dev_key(self) -> str | None:
        return next((k for k, t in self.keys.items() if t == DEV_TENANT), None)
