"""`hallmark tenants add|list` — the tenant registry: principal, API key, region and tier in one place."""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    tenants = subparsers.add_parser("tenants", help="the tenants: who may submit, under which policy region")
    sub = tenants.add_subparsers(dest="tenants_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="register a tenant: API key, Kafka principal and topic requests.<tenant>")
    add.add_argument("tenant_id")
    add.add_argument("--region", default="default", help="the policy pack region its requests are screened under")
    add.add_argument("--tier", default="standard")
    add.set_defaults(func=_add)
    listing = sub.add_parser("list", help="the registered tenants (JSON lines)")
    listing.set_defaults(func=_list)
    shred = sub.add_parser("shred", help="crypto-shred a tenant: delete its prompt keys, uploads and credentials")
    shred.add_argument("tenant_id")
    shred.set_defaults(func=_shred)


def _add(args: argparse.Namespace) -> int:
    from hallmark.cli import CommandError
    from hallmark.kafka_security import credentials
    from hallmark.tenants import Tenant, TenantRegistry
    from safety.policy import PolicyError, load_pack
    from streams.apikeys import ApiKeys

    config = args.config
    try:
        load_pack().for_region(args.region)
        tenant = TenantRegistry.load(config.tenants_file).add(Tenant(args.tenant_id, args.region, args.tier))
    except (ValueError, PolicyError) as exc:
        raise CommandError(str(exc)) from None
    key = ApiKeys.load(config.home / "api-keys.json").add(tenant.tenant_id)
    credentials(config.kafka_credentials, tenant.principal)
    where = _provision(config)
    print(json.dumps({"tenant_id": tenant.tenant_id, "region": tenant.region, "tier": tenant.tier, "api_key": key,
                      "kafka_principal": tenant.principal, "kafka_topic": tenant.topic,
                      "kafka_credentials": str(config.kafka_credentials / f"{tenant.principal}.json"),
                      "broker": where}))
    return 0


def _provision(config) -> str:
    """Apply topics and ACLs now if the broker answers; else `hallmark up` does it on its next start."""
    from hallmark.stack import Stack

    try:
        stack = Stack(config)
        stack.provision()
        restarted = stack.restart_readers_of_requests()
        return "provisioned" + (f"; restarted {', '.join(restarted)}" if restarted else "")
    except Exception as exc:  # the broker is not running: nothing is lost, `up` provisions every tenant
        return f"not reachable ({exc.__class__.__name__}); `hallmark up` will provision it"


def _list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from hallmark.tenant_keys import Shredded
    from hallmark.tenants import open_registry, tenant_keys

    keys = tenant_keys(args.config)
    for tenant in open_registry(args.config).tenants.values():
        try:
            key_id, public = keys.public(tenant.tenant_id)
        except Shredded:
            key_id, public = None, None
        print(json.dumps({**asdict(tenant), "kafka_principal": tenant.principal, "kafka_topic": tenant.topic,
                          "prompt_key_id": key_id, "prompt_public_key": public}))
    return 0


def _shred(args: argparse.Namespace) -> int:
    """Every prompt sealed to the tenant becomes unreadable everywhere (topics, tables, blobs, logs): its key
    pair is overwritten and deleted; its uploads, API keys and Kafka credentials go too."""
    from hallmark.cli import CommandError
    from hallmark.tenants import TenantRegistry, tenant_keys
    from provenance.store import BlobStore
    from streams.apikeys import ApiKeys
    from streams.uploads import UploadStore

    config = args.config
    registry = TenantRegistry.load(config.tenants_file)
    if args.tenant_id not in registry.tenants:
        raise CommandError(f"no tenant {args.tenant_id!r}")
    tenant = registry.mark_shredded(args.tenant_id)
    keys_deleted = tenant_keys(config).shred(tenant.tenant_id)
    UploadStore(BlobStore(config.blob_dir)).shred(tenant.tenant_id)
    revoked = ApiKeys.load(config.home / "api-keys.json").revoke(tenant.tenant_id)
    (config.kafka_credentials / f"{tenant.principal}.json").unlink(missing_ok=True)
    print(json.dumps({"tenant_id": tenant.tenant_id, "shredded": True, "prompt_keys_deleted": keys_deleted,
                      "api_keys_revoked": revoked}))
    return 0
