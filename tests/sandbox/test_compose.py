"""The sandbox files, checked by reading them (no Docker engine runs on these machines)."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_when_validated_against_compose_spec_schema_has_no_errors() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_compose_when_read_wires_exchange_to_a_healthy_persistent_redis() -> None:
    services = _compose()["services"]
    redis, exchange, demo = services["redis"], services["exchange"], services["demo"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert redis["healthcheck"]["test"][-1] == "ping"
    assert exchange["depends_on"]["redis"]["condition"] == "service_healthy"
    assert exchange["environment"]["EXCHANGE_REDIS_URL"].startswith("redis://redis:6379")
    assert exchange["environment"]["EXCHANGE_DATA_DIR"] == "/data"
    assert any(v.endswith(":/data") for v in exchange["volumes"])
    assert "8000:8000" in exchange["ports"]
    assert demo["profiles"] == ["demo"]
    assert demo["depends_on"]["exchange"]["condition"] == "service_healthy"
    assert demo["entrypoint"] == ["python", "-m", "service.demo"]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _top_level_imports(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_dockerfile_when_read_copies_every_first_party_package_the_service_imports() -> None:
    copied = set(re.findall(r"^COPY (\w+) \./\1$", _dockerfile(), re.M))
    first_party = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()} - {"tests", "bench"}
    needed = (_top_level_imports("service") | _top_level_imports("api") | _top_level_imports("engine")) & first_party
    assert needed <= copied, needed - copied


def test_dockerfile_when_read_runs_service_as_non_root_with_healthcheck_and_data_volume() -> None:
    text = _dockerfile()
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert 'ENTRYPOINT ["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'VOLUME ["/data"]' in text and "EXCHANGE_DATA_DIR=/data" in text
    assert text.count("FROM ") == 2  # multi-stage
    assert ".[dev]" not in text and "bench" not in text  # runtime dependencies only


def test_runtime_dependencies_when_read_cover_what_the_service_and_demo_import() -> None:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {re.split(r"[<>=\[ ]", d)[0].lower().replace("-", "_") for d in deps}
    # via extras and the declared packages own dependencies
    declared |= {"uvicorn", "websockets", "prometheus_client", "pydantic_settings", "starlette", "pydantic_core"}
    imported = _top_level_imports("service") | _top_level_imports("api") | _top_level_imports("engine")
    stdlib = set(sys.stdlib_module_names)
    first_party = {"engine", "service", "api"}
    third_party = {m.lower() for m in imported if m not in stdlib and m not in first_party}
    aliases = {"sortedcontainers": "sortedcontainers", "prometheus_client": "prometheus_client"}
    missing = {m for m in third_party if aliases.get(m, m) not in declared}
    assert not missing, f"imported at run time but not a runtime dependency: {missing}"
