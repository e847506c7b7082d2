"""The sandbox files, checked by reading them (no Docker engine runs on these machines).

docker-compose.yml against the Compose schema and its wiring (the exchange published on
127.0.0.1 only, Redis not published, the demo's crash); the Dockerfile (first-party packages,
non-root, installs exactly requirements.lock); the lock (every line pinned, every runtime
dependency in it, no dev tool, closed under the dependencies of what it pins).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """What compose makes of `${VAR:-default}` / `${VAR-default}` / `${VAR}` with `env`."""
    env = env or {}

    def one(m: re.Match[str]) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", one, value)


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
    assert [_interpolate(p) for p in exchange["ports"]] == ["127.0.0.1:8000:8000"]
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
    first_party = {"engine", "service", "api", "native"}
    third_party = {m.lower() for m in imported if m not in stdlib and m not in first_party}
    aliases = {"sortedcontainers": "sortedcontainers", "prometheus_client": "prometheus_client"}
    missing = {m for m in third_party if aliases.get(m, m) not in declared}
    assert not missing, f"imported at run time but not a runtime dependency: {missing}"


def test_compose_when_read_publishes_the_exchange_on_loopback_unless_asked_and_redis_not_at_all() -> None:
    services = _compose()["services"]
    assert "ports" not in services["redis"]  # read it with `docker compose exec redis redis-cli`
    (port,) = services["exchange"]["ports"]
    # the admin token defaults to the well-known sandbox-admin-token: never on every interface
    # unless both the address and (documented) a token of one's own are chosen
    assert _interpolate(port).startswith("127.0.0.1:")
    assert _interpolate(port, {"SANDBOX_BIND": "0.0.0.0", "SANDBOX_PORT": "8001"}) == "0.0.0.0:8001:8000"
    token = services["exchange"]["environment"]["EXCHANGE_ADMIN_TOKEN"]
    assert _interpolate(token) == "sandbox-admin-token"
    assert _interpolate(token, {"EXCHANGE_ADMIN_TOKEN": "mine-and-long-enough"}) == "mine-and-long-enough"


def test_compose_when_read_runs_the_market_on_the_shipped_feed_like_make_sandbox() -> None:
    services = _compose()["services"]
    env = services["exchange"]["environment"]
    assert env["EXCHANGE_CONFIG"] == "/opt/exchange/feeds/sandbox.toml"
    assert _interpolate(env["EXCHANGE_PRICE_FEED"]) == "/opt/exchange/feeds/calm.csv"
    crash = {"SANDBOX_FEED": "/opt/exchange/feeds/crash25.csv"}
    assert _interpolate(env["EXCHANGE_PRICE_FEED"], crash) == crash["SANDBOX_FEED"]
    assert env["EXCHANGE_FEED_LOOP"] == "1"
    # the image holds what those paths name
    assert re.search(r"^COPY feeds /opt/exchange/feeds$", _dockerfile(), re.M)
    # and the dashboard: an installed wheel has no web/ beside the api package
    assert re.search(r"^COPY web /opt/exchange/web$", _dockerfile(), re.M)
    assert "ENV EXCHANGE_WEB_DIR=/opt/exchange/web" in _dockerfile()
    for name in ("sandbox.toml", "calm.csv", "crash25.csv", "flash10.csv"):
        assert (ROOT / "feeds" / name).is_file(), name
    demo = services["demo"]["command"]
    assert demo[demo.index("--url") + 1] == "http://exchange:8000" and "--crash" not in demo


def test_dockerfile_when_read_installs_exactly_the_lock_from_wheels_it_built() -> None:
    text = _dockerfile()
    assert re.search(r"^COPY requirements\.lock \./$", text, re.M)
    assert "pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.lock" in text
    assert "pip wheel --no-cache-dir --no-deps --wheel-dir /wheels ." in text
    install = re.search(r"^RUN pip install (.*)$", text, re.M)
    assert install is not None
    assert "--no-index" in install.group(1) and "-r /wheels/requirements.lock" in install.group(1)


LOCK = ROOT / "requirements.lock"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", line.strip())
        assert m, f"not pinned with ==: {line!r}"
        pins[_canonical(m.group(1))] = m.group(2)
    return pins


def _pyproject() -> dict[str, Any]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_lock_when_read_pins_every_runtime_dependency_within_its_bounds_and_no_dev_tool() -> None:
    from packaging.requirements import Requirement

    pins = _lock()
    project = _pyproject()["project"]
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = _canonical(req.name)
        assert name in pins, f"{name} is a runtime dependency but not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {req.specifier}"
    runtime = {_canonical(Requirement(d).name) for d in project["dependencies"]}
    dev_only = {_canonical(Requirement(d).name) for d in project["optional-dependencies"]["dev"]} - runtime
    # pyyaml is also a runtime dependency, through uvicorn[standard]
    assert not (dev_only - {"pyyaml"}) & set(pins), (dev_only - {"pyyaml"}) & set(pins)
    assert "perp-exchange" not in pins


def test_lock_when_compared_with_installed_metadata_holds_the_dependencies_of_what_it_pins() -> None:
    """Closed under dependencies: for each pinned package installed here at the pinned version
    (the others cannot be read without downloading them), every dependency it needs on Linux
    with Python 3.11, as the image has, is pinned too (the image build would fail otherwise)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    pins = _lock()
    extras = {"uvicorn": {"standard"}}  # pyproject asks for uvicorn[standard]
    missing: dict[str, set[str]] = {}
    checked = 0
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for spec in dist.requires or []:
            req = Requirement(spec)
            envs = [{"extra": e, "sys_platform": "linux", "platform_system": "Linux", "python_version": "3.11"}
                    for e in (extras.get(name) or {""})]
            needed = req.marker is None or any(req.marker.evaluate(env) for env in envs)
            if needed and _canonical(req.name) not in pins:
                missing.setdefault(name, set()).add(req.name)
    assert checked >= len(pins) // 2, "too few pinned packages installed here to check the lock"
    assert not missing, missing
