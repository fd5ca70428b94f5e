"""Who may read and write which topic: the broker's ACLs, derived from the stage registry (policy as data).

Each stage's principal reads its sources (and `outcomes`, for the first-outcome-wins guard) and writes what it
declares (`Stage.writes`; flow stages also `outcomes` and `dlq`); the submission API writes only `requests`;
the reviewer console writes decisions and activity and reads the task it decides; each tenant writes only its
own `requests.<tenant>`. The verification server has no principal at all: it never reaches the broker.
"""
from __future__ import annotations

from hallmark.kafka_security import Grant
from hallmark.tenants import REQUESTS, Tenant
from schemas.topics import TOPICS

API = "svc-api"
CONSOLE = "svc-review-console"
TENANT_TOPICS = f"{REQUESTS}.*"  # every tenant's submission topic (a prefix)


def stage_principal(stage: str) -> str:
    return f"svc-{stage}"


def stage_grant(stage_cls) -> Grant:
    reads = set(stage_cls.sources) | set(stage_cls.reads) | ({"outcomes"} if stage_cls.in_flow else set())
    if REQUESTS in reads:
        reads.add(TENANT_TOPICS)
    writes = set(stage_cls.writes) | ({"outcomes", "dlq"} if stage_cls.in_flow else set())
    if stage_cls.name == "audit":
        writes |= {t for t in TOPICS if t.startswith("audit")}
    return Grant(stage_principal(stage_cls.name), tuple(sorted(reads)), tuple(sorted(writes)),
                 (f"hallmark-{stage_cls.name}",))


def grants(tenants: list[Tenant]) -> list[Grant]:
    """Every principal's grant: the stages, the API, the console, the tenants."""
    from streams.run import STAGES, stage_class

    return ([stage_grant(stage_class(name)) for name in STAGES]
            + [Grant(API, writes=(REQUESTS,)), Grant(CONSOLE, reads=("review-tasks",),
                                                     writes=("review-decisions", "review-activity"))]
            + [Grant(t.principal, writes=(t.topic,)) for t in tenants])
