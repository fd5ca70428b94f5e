"""What `docker-compose.yml` needs for an authenticated broker: per-service credentials and the broker's config.

`python -m hallmark.broker credentials --copy-to /creds` (the compose `credentials` job) makes every principal's
credentials in its own volume and copies each service's file, alone, into `/creds/<principal>/`, a volume only
that service mounts; the broker's `server.properties` and its admin SCRAM bootstrap go to `/creds/broker/`.
`python -m hallmark.broker provision` (the `provision` job) then creates topics, SCRAM users and ACLs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from hallmark.config import HallmarkConfig
from hallmark.kafka_security import ADMIN, CONTROLLER, credentials, format_args, sasl_properties
from hallmark.tenants import TenantRegistry


def write_credentials(config: HallmarkConfig, out: Path, host: str = "kafka", port: int = 9092) -> list[str]:
    """Every principal's credentials, each service's copy in its own folder, and the broker's config."""
    from streams.acls import grants

    tenants = list(TenantRegistry.load(config.tenants_file).tenants.values())
    principals = [g.principal for g in grants(tenants)]
    for principal in [ADMIN, CONTROLLER, *principals]:
        credentials(config.kafka_credentials, principal)
    for principal in principals:
        target = out / principal / f"{principal}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.kafka_credentials / f"{principal}.json", target)
        os.chmod(target, 0o600)
    broker = out / "broker"
    broker.mkdir(parents=True, exist_ok=True)
    lines = ["process.roles=broker,controller", "node.id=1", f"controller.quorum.voters=1@{host}:{port + 1}",
             *sasl_properties(port, port + 1, config.kafka_credentials, bind="0.0.0.0", host=host),
             "log.dirs=/var/lib/kafka/data", "offsets.topic.replication.factor=1",
             "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
             "min.insync.replicas=1", "num.partitions=3", "group.initial.rebalance.delay.ms=0",
             "auto.create.topics.enable=false"]
    for name, text in (("server.properties", "\n".join(lines) + "\n"),
                       ("format-args", format_args(config.kafka_credentials)[1] + "\n")):
        (broker / name).write_text(text)
        os.chmod(broker / name, 0o600)
    return principals
