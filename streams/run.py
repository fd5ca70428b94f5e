"""Run one stage as its own process: `python -m streams.run <stage>` (its own consumer group, killable alone)."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging

from hallmark.config import HallmarkConfig

STAGES: dict[str, str] = {
    "prompt-gate": "streams.stages.prompt_gate:PromptGateStage",
    "router": "streams.stages.router:RouterStage",
    "generation": "streams.stages.generation:GenerationStage",
    "output-gate": "streams.stages.output_gate:OutputGateStage",
    "review": "streams.stages.decisions:ReviewStage",
    "publisher": "streams.stages.publisher:PublisherStage",
    "audit": "streams.stages.audit:AuditStage",
    "projections": "streams.stages.projections:ProjectionStage",
    "review-queue": "streams.stages.projections:ReviewQueueStage",
}


def stage_class(name: str):
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams.run", description=__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--loglevel", default="info")
    args = parser.parse_args(argv)
    import faust

    from streams.runner import build_app

    settings = HallmarkConfig.from_env()
    logging.basicConfig(level=args.loglevel.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    app, runner = build_app(stage_class(args.stage)(settings))
    asyncio.run(runner.prepare())  # models load before the consumer exists: no starved heartbeats meanwhile
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run left none; the Faust worker wants one
    faust.Worker(app, loglevel=args.loglevel, quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
