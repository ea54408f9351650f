"""docker-compose.yml and Dockerfile, checked without Docker (it cannot run on our machines).

Every service, volume, build context and file the compose file names must exist; the
Airflow version of the image must be the one pinned in constraints.txt; and the
connections must be the ones the example emulators expect.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-init"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def pinned(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def test_official_layout_plus_warehouse_and_emulators(compose):
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"postgres", "warehouse", "emulators"} <= set(services)
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands == {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                        "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name


def test_every_named_service_volume_and_file_exists(compose):
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in volumes, f"{name} uses undeclared volume {source}"
        for env_file in service.get("env_file") or []:
            assert (ROOT / env_file).exists(), f"{name}: missing env_file {env_file}"
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert context.is_dir(), name
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.is_file(), name


def test_dockerfile_copies_existing_files_and_pins_match(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            sources = [s for s in line.split()[1:-1] if not s.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    airflow = pinned("apache-airflow")
    assert re.search(rf"^ARG AIRFLOW_VERSION={re.escape(airflow)}$", dockerfile, re.M), "Dockerfile Airflow version"
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in dockerfile
    assert "-c constraints.txt" in dockerfile and "-c constraints-dbt.txt" in dockerfile
    for name in AIRFLOW_SERVICES | {"emulators"}:
        service = compose["services"][name]
        assert service["build"]["args"]["AIRFLOW_VERSION"] == airflow, name
        assert service["image"].endswith(f":{airflow}"), name


def test_connections_point_at_the_example_emulators(compose):
    from airflow_provider_retl.testing import example_stack

    env = compose["services"]["airflow-scheduler"]["environment"]
    urls = {kind: f"http://emulators:{port}" for kind, port in example_stack.PORTS.items()}
    history = "/opt/airflow/data/retl_history.sqlite"  # the example DAGs' sync history, beside the warehouse
    for conn_id, fields in example_stack.connections(urls, history_path=history).items():
        assert json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"]) == fields, conn_id
    ports = {int(p.split(":")[1]) for p in compose["services"]["emulators"]["ports"]}
    assert ports == set(example_stack.PORTS.values())
    assert json.loads(env["AIRFLOW_CONN_WAREHOUSE"])["conn_type"] == "duckdb"


@pytest.fixture(autouse=True)
def _dags_on_path(monkeypatch):
    # shop_example.py names the pools; airflow-init must create each of them.
    monkeypatch.syspath_prepend(str(ROOT / "dags"))


def test_airflow_init_creates_every_example_pool(compose):
    import shop_example

    init = " ".join(compose["services"]["airflow-init"]["command"])
    for pool in shop_example.POOLS.values():
        assert pool in init
