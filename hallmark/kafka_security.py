"""Authenticated Kafka: per-principal SCRAM credentials, the broker's SASL settings, and applying ACL grants.

Every Hallmark process connects as its own principal (SASL/SCRAM-SHA-512); the broker's StandardAuthorizer
refuses anything no ACL allows (`allow.everyone.if.no.acl.found=false`). Credentials are generated on first use,
one JSON file per principal, mode 0600. `admin` (a super user) exists only for operations: topics, users, ACLs.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from hallmark.config import KafkaClient, read_credentials

ADMIN = "admin"
CONTROLLER = "controller"  # the broker's own link to its KRaft controller (SASL/PLAIN, never used by clients)
MECHANISM = "SCRAM-SHA-512"


def credentials(directory: Path, principal: str) -> tuple[str, str]:
    """The principal's (username, password), created with a random password (0600) the first time."""
    path = Path(directory) / f"{principal}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_credentials(path)
        with os.fdopen(fd, "w") as f:
            json.dump({"username": principal, "password": secrets.token_urlsafe(32)}, f)
    return read_credentials(path)


def client_for(directory: Path, bootstrap: str, principal: str) -> KafkaClient:
    username, password = credentials(directory, principal)
    return KafkaClient(bootstrap, username, password)


def sasl_properties(port: int, controller_port: int, directory: Path, bind: str = "127.0.0.1",
                    host: str = "127.0.0.1") -> list[str]:
    """server.properties lines for SASL/SCRAM on the client listener, SASL/PLAIN to the controller, and ACLs
    (listening on `bind`, reached by clients at `host`)."""
    _, admin_pw = credentials(directory, ADMIN)
    _, controller_pw = credentials(directory, CONTROLLER)
    plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
             f'username="{CONTROLLER}" password="{controller_pw}" user_{CONTROLLER}="{controller_pw}";')
    scram = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{ADMIN}" password="{admin_pw}";'
    return [
        f"listeners=SASL_PLAINTEXT://{bind}:{port},CONTROLLER://{bind}:{controller_port}",
        f"advertised.listeners=SASL_PLAINTEXT://{host}:{port}",
        "controller.listener.names=CONTROLLER", "inter.broker.listener.name=SASL_PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        f"sasl.enabled.mechanisms={MECHANISM}", f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
        "sasl.mechanism.controller.protocol=PLAIN", "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={plain}",
        f"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN};User:{CONTROLLER}", "allow.everyone.if.no.acl.found=false",
    ]


def format_args(directory: Path) -> list[str]:
    """Extra `StorageTool format` arguments: the admin's SCRAM credential, so the broker can authenticate itself."""
    _, admin_pw = credentials(directory, ADMIN)
    return ["--add-scram", f"{MECHANISM}=[name={ADMIN},password={admin_pw}]"]


@dataclass(frozen=True)
class Grant:
    """What one principal may do: read these topics, write those, join its consumer groups. Names ending in
    `*` are prefixes (`requests.*` = every tenant's submission topic)."""

    principal: str
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = field(default=())


def apply_grants(admin: KafkaClient, directory: Path, grants: list[Grant]) -> None:
    """Create (or update) every principal's SCRAM credential and its ACLs; idempotent."""
    from kafka.admin import (ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient,
                             ResourcePattern, ResourceType, ScramMechanism, UserScramCredentialUpsertion)

    def pattern(kind, name: str) -> ResourcePattern:
        if name.endswith("*"):
            return ResourcePattern(kind, name[:-1], ACLResourcePatternType.PREFIXED)
        return ResourcePattern(kind, name, ACLResourcePatternType.LITERAL)

    client = KafkaAdminClient(**admin.aiokafka(), request_timeout_ms=30000)
    try:
        client.alter_user_scram_credentials([
            UserScramCredentialUpsertion(g.principal, ScramMechanism.SCRAM_SHA_512,
                                         credentials(directory, g.principal)[1].encode()) for g in grants])
        acls = []
        for g in grants:
            user = f"User:{g.principal}"
            rules = ([(ResourceType.TOPIC, t, ACLOperation.READ) for t in g.reads]
                     + [(ResourceType.TOPIC, t, ACLOperation.WRITE) for t in g.writes]
                     + [(ResourceType.GROUP, name, ACLOperation.READ) for name in g.groups])
            acls += [ACL(user, "*", op, ACLPermissionType.ALLOW, pattern(kind, name)) for kind, name, op in rules]
        result = client.create_acls(acls)
        if result.get("failed"):
            raise RuntimeError(f"could not create {len(result['failed'])} ACLs: {result['failed'][:3]}")
    finally:
        client.close()
