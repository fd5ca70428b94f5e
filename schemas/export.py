"""Export the event models and the topic registry as JSON Schema files (checked in under schemas/jsonschema/)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.events import EVENT_TYPES
from schemas.topics import TOPICS

DEFAULT_DIR = Path(__file__).resolve().parent / "jsonschema"


def rendered() -> dict[str, str]:
    """File name → content: one schema per event type and `topics.json` for the registry."""
    files = {f"{name}.schema.json": json.dumps(cls.model_json_schema(mode="serialization"), indent=2, sort_keys=True)
             + "\n" for name, cls in sorted(EVENT_TYPES.items())}
    registry = [{"name": t.name, "partitions": t.partitions, "retention_ms": t.retention_ms,
                 "event_types": [cls.event_type_name for cls in t.event_types]} for t in TOPICS.values()]
    files["topics.json"] = json.dumps(registry, indent=2) + "\n"
    return files


def export_json_schemas(out_dir: Path = DEFAULT_DIR) -> list[Path]:
    """Write every file, removing stale ones; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = rendered()
    for stale in out_dir.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    paths = []
    for name, text in files.items():
        (out_dir / name).write_text(text)
        paths.append(out_dir / name)
    return paths


def drift(out_dir: Path = DEFAULT_DIR) -> list[str]:
    """Names of files that differ from, are missing in, or are extra in `out_dir`."""
    files = rendered()
    present = {p.name for p in out_dir.glob("*.json")} if out_dir.is_dir() else set()
    changed = [n for n, text in files.items() if n not in present or (out_dir / n).read_text() != text]
    return sorted(changed + [n for n in present - set(files)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the checked-in files drifted")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    if args.check:
        changed = drift(args.out)
        print("\n".join(f"drifted: {n}" for n in changed) or "JSON Schemas up to date")
        return 1 if changed else 0
    for path in export_json_schemas(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
