"""The layering, checked on the source: every import (module level and inside functions) of every production file."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hallmark", "schemas", "streams", "generator", "safety", "provenance", "review", "review_ui")
DOMAIN = ("safety", "provenance", "generator", "review")  # plain libraries: no Kafka, no Faust, no pipeline
KAFKA = ("aiokafka", "kafka", "confluent_kafka", "faust", "mode")
MAX_LINES = 400


def files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if ".venv" not in p.parts)


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module name imported anywhere in the file, relative imports resolved."""
    tree, package = ast.parse(path.read_text()), module_of(path).rsplit(".", 1)[0]
    if path.name == "__init__.py":
        package = module_of(path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def top(name: str) -> str:
    return name.split(".", 1)[0]


def test_domain_libraries_import_no_kafka_no_faust_and_nothing_of_the_pipeline_or_console():
    bad = [(module_of(p), name) for package in DOMAIN for p in files(package) for name in imports(p)
           if top(name) in KAFKA + ("streams", "review_ui")]
    assert bad == []


def test_schemas_have_no_import_loop():
    mods = {module_of(p): {n for n in imports(p) if top(n) == "schemas"} for p in files("schemas")}
    graph = {m: {d for d in deps if d in mods and d != m} for m, deps in mods.items()}
    graph = {m: deps - {"schemas"} if m != "schemas" else deps for m, deps in graph.items()}  # the facade re-exports

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(d == goal or (d not in seen and reaches(d, goal, seen | {d})) for d in graph[start])

    assert [m for m in graph if reaches(m, m, {m})] == []


def test_no_file_under_streams_is_about_review_and_review_has_one_home():
    assert [p.relative_to(ROOT) for p in files("streams") if "review" in p.name] == []
    names = [p.name for package in PACKAGES for p in files(package) if p.name != "__init__.py"]
    assert "review_queue.py" not in names
    assert {"tasks.py", "decisions.py", "claims.py", "queue.py"} <= {p.name for p in files("review")}


def test_no_production_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for package in PACKAGES for p in files(package)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_only_the_config_root_reads_or_sets_environment_variables():
    readers = []
    for package in PACKAGES:
        for p in files(package):
            text = p.read_text()
            if ("os.environ" in text or "getenv" in text) and p != ROOT / "hallmark" / "config.py":
                readers.append(str(p.relative_to(ROOT)))
    assert readers == []
