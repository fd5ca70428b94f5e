"""The one config root: `HallmarkConfig`, built once per entry point from the environment and passed down.

This is the only module that reads environment variables. Libraries take the config (or the parts they need)
as arguments; child processes get it back as environment variables through `HallmarkConfig.to_env`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Ports:
    """Where the local web servers listen."""

    api: int = 8080
    verify: int = 8090
    review: int = 8091


@dataclass(frozen=True)
class KafkaClient:
    """How one process connects to Kafka: as its principal over SASL/SCRAM, or without credentials."""

    bootstrap: str
    username: str = ""  # "" = no credentials (a broker without authentication, or one that will refuse us)
    password: str = field(default="", repr=False)
    mechanism: str = "SCRAM-SHA-512"

    @classmethod
    def of(cls, client: "KafkaClient | str") -> "KafkaClient":
        """A bare bootstrap string means a connection without credentials."""
        return client if isinstance(client, KafkaClient) else cls(client)

    def aiokafka(self) -> dict:
        """Keyword arguments for aiokafka's clients (and kafka-python's admin client)."""
        if not self.username:
            return {"bootstrap_servers": self.bootstrap}
        return {"bootstrap_servers": self.bootstrap, "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": self.mechanism, "sasl_plain_username": self.username,
                "sasl_plain_password": self.password}


def read_credentials(path: Path) -> tuple[str, str]:
    """(username, password) from a credentials file (`{"username": …, "password": …}`, mode 0600)."""
    import json

    data = json.loads(path.read_text())
    return str(data["username"]), str(data["password"])


@dataclass(frozen=True)
class HallmarkConfig:
    """Everything a process needs to find the others and its keys. `from_env` reads the HALLMARK_* variables."""

    home: Path = REPO_ROOT / "var"
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_principal: str = ""  # this process's Kafka principal (its credentials file is under kafka_credentials)
    kafka_secure: bool = True  # the local broker authenticates (SASL/SCRAM) and authorizes (ACLs) every client
    prompt_sealing: bool = True  # prompts travel sealed; off only to measure its cost (bench/pipeline.py)
    kafka_credentials_dir: Path | None = None  # one 0600 JSON file per principal; None = home/kafka-credentials
    database_url: str = ""  # "" = SQLite under home
    model_dir: str = ""  # "" = the embedded shapes model; a model folder, or a folder of them (+ loras/)
    generator_device: str = "auto"  # auto | cpu | cuda | cuda:N: one process owns one device
    generator_compile: bool = False  # torch.compile the denoiser (CUDA)
    ports: Ports = field(default_factory=Ports)
    api_key: str = ""  # `hallmark submit`'s key; "" = the dev key in home/api-keys.json
    c2pa_key: Path | None = None  # production ES256 signing key (PEM); None = the local test CA
    c2pa_cert_chain: Path | None = None
    c2pa_trust_anchors: Path | None = None
    tsa_url: str = ""  # RFC 3161 timestamp authority for manifests; "" = off
    master_key: Path | None = None  # wraps the tenants' prompt keys at rest; None = keys_dir/master.key
    audit_checkpoint_key: Path | None = None  # Ed25519 key that signs audit checkpoints; None = keys_dir's own
    audit_checkpoint_file: Path | None = None  # append-only checkpoint log to ship elsewhere; None = under home
    audit_checkpoint_every: int = 1000  # records per partition between checkpoints
    audit_checkpoint_seconds: float = 30.0  # … or seconds, whichever comes first
    cache_dir: Path = Path.home() / ".cache" / "hallmark"  # derived artefacts (e.g. the ONNX prompt encoder)
    threads: int = 2  # intra-op threads of each child process

    @property
    def blob_dir(self) -> Path:
        return self.home / "blobs"

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def kafka_credentials(self) -> Path:
        return self.kafka_credentials_dir or self.home / "kafka-credentials"

    def operator_client(self) -> KafkaClient:
        """Operator commands (`hallmark audit verify`, rebuilds, tenants) run as this process's principal if it
        has one, else as the broker's admin (their host holds the admin credentials)."""
        return self.kafka_client(self.kafka_principal or "admin")

    def kafka_client(self, principal: str | None = None) -> KafkaClient:
        """This process's (or `principal`'s) connection; without a credentials file it connects without any."""
        name = self.kafka_principal if principal is None else principal
        path = self.kafka_credentials / f"{name}.json"
        if not (self.kafka_secure and name and path.is_file()):
            return KafkaClient(self.kafka_bootstrap)
        username, password = read_credentials(path)
        return KafkaClient(self.kafka_bootstrap, username, password)

    @property
    def banks_dir(self) -> Path:
        """Hash banks of known-bad images (operator data: `hallmark safety banks add`)."""
        return self.home / "banks"

    @property
    def tenants_file(self) -> Path:
        return self.home / "tenants.json"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'hallmark.db'}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "HallmarkConfig":
        """Defaults, then HALLMARK_* variables, then `overrides` (keyword arguments naming fields)."""
        env = os.environ if env is None else env
        base = cls()

        def get(name: str, default):
            return env.get(name) or default

        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        xdg = Path(env["XDG_CACHE_HOME"]) / "hallmark" if env.get("XDG_CACHE_HOME") else base.cache_dir
        config = cls(
            home=Path(get("HALLMARK_HOME", base.home)), kafka_bootstrap=get("HALLMARK_KAFKA", base.kafka_bootstrap),
            kafka_principal=get("HALLMARK_KAFKA_PRINCIPAL", ""),
            kafka_secure=get("HALLMARK_KAFKA_SECURE", "1") not in ("0", "false", "no"),
            kafka_credentials_dir=path("HALLMARK_KAFKA_CREDENTIALS"),
            prompt_sealing=get("HALLMARK_PROMPT_SEALING", "1") not in ("0", "false", "no"),
            database_url=get("HALLMARK_DATABASE_URL", ""), model_dir=get("HALLMARK_MODEL_DIR", ""),
            generator_device=get("HALLMARK_GENERATOR_DEVICE", base.generator_device),
            generator_compile=get("HALLMARK_GENERATOR_COMPILE", "0") in ("1", "true", "yes"),
            ports=Ports(int(get("HALLMARK_API_PORT", base.ports.api)), int(get("HALLMARK_VERIFY_PORT",
                        base.ports.verify)), int(get("HALLMARK_REVIEW_PORT", base.ports.review))),
            api_key=get("HALLMARK_API_KEY", ""), c2pa_key=path("HALLMARK_C2PA_KEY"),
            c2pa_cert_chain=path("HALLMARK_C2PA_CERT_CHAIN"), c2pa_trust_anchors=path("HALLMARK_C2PA_TRUST_ANCHORS"),
            tsa_url=get("HALLMARK_TSA_URL", ""), cache_dir=Path(get("HALLMARK_CACHE", xdg)),
            master_key=path("HALLMARK_MASTER_KEY"), audit_checkpoint_key=path("HALLMARK_AUDIT_CHECKPOINT_KEY"),
            audit_checkpoint_file=path("HALLMARK_AUDIT_CHECKPOINT_FILE"),
            audit_checkpoint_every=int(get("HALLMARK_AUDIT_CHECKPOINT_EVERY", base.audit_checkpoint_every)),
            audit_checkpoint_seconds=float(get("HALLMARK_AUDIT_CHECKPOINT_SECONDS", base.audit_checkpoint_seconds)),
            threads=int(get("OMP_NUM_THREADS", base.threads)))
        return replace(config, **overrides)

    def to_env(self) -> dict[str, str]:
        """This config as the variables `from_env` reads, for the child processes of `hallmark up`."""
        values = {"HALLMARK_HOME": self.home, "HALLMARK_KAFKA": self.kafka_bootstrap,
                  "HALLMARK_KAFKA_PRINCIPAL": self.kafka_principal, "HALLMARK_KAFKA_SECURE": int(self.kafka_secure),
                  "HALLMARK_KAFKA_CREDENTIALS": self.kafka_credentials_dir or "",
                  "HALLMARK_PROMPT_SEALING": int(self.prompt_sealing),
                  "HALLMARK_DATABASE_URL": self.database_url, "HALLMARK_MODEL_DIR": self.model_dir,
                  "HALLMARK_GENERATOR_DEVICE": self.generator_device,
                  "HALLMARK_GENERATOR_COMPILE": int(self.generator_compile),
                  "HALLMARK_API_PORT": self.ports.api, "HALLMARK_VERIFY_PORT": self.ports.verify,
                  "HALLMARK_REVIEW_PORT": self.ports.review, "HALLMARK_C2PA_KEY": self.c2pa_key or "",
                  "HALLMARK_C2PA_CERT_CHAIN": self.c2pa_cert_chain or "",
                  "HALLMARK_C2PA_TRUST_ANCHORS": self.c2pa_trust_anchors or "", "HALLMARK_TSA_URL": self.tsa_url,
                  "HALLMARK_MASTER_KEY": self.master_key or "",
                  "HALLMARK_AUDIT_CHECKPOINT_KEY": self.audit_checkpoint_key or "",
                  "HALLMARK_AUDIT_CHECKPOINT_FILE": self.audit_checkpoint_file or "",
                  "HALLMARK_AUDIT_CHECKPOINT_EVERY": self.audit_checkpoint_every,
                  "HALLMARK_AUDIT_CHECKPOINT_SECONDS": self.audit_checkpoint_seconds,
                  "HALLMARK_CACHE": self.cache_dir, "OMP_NUM_THREADS": self.threads}
        return {name: str(value) for name, value in values.items()}


def process_env(config: HallmarkConfig) -> dict[str, str]:
    """The environment of a child process: this one's, with the config and unbuffered output."""
    return {**os.environ, **config.to_env(), "PYTHONUNBUFFERED": "1"}
