"""The services are defined once (common/services.py); everything else follows from it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

from common import services
from common.settings import SERVICES, Settings
from common.telemetry import ROLES
from workflows.models import TaskQueues

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_procfile_is_the_one_the_services_make() -> None:
    # `python -m common.services procfile > Procfile` after changing the services.
    assert (REPO_ROOT / "Procfile").read_text() == services.procfile()


def test_every_worker_entry_point_exists() -> None:
    for service in services.WORKERS:
        module = importlib.import_module(service.worker)
        assert callable(module.build), service.worker


def test_every_business_service_has_its_migrations_and_effect_table() -> None:
    for service in services.BUSINESS_SERVICES:
        assert (REPO_ROOT / "migrations" / service.name / "env.py").is_file(), service.name
        tables = importlib.import_module(f"activities.{service.name}").TABLES
        effect = {table.__tablename__: table for table in tables}.get(service.effect_table)
        assert effect is not None, f"{service.name}: no table {service.effect_table}"
        assert service.effect_key in effect.model_fields, service.name


def test_settings_read_each_services_queue_and_database(monkeypatch: pytest.MonkeyPatch) -> None:
    for service in services.WORKERS:
        monkeypatch.setenv(service.task_queue_env, f"tq-{service.name}")
        if service.owns_database:
            monkeypatch.setenv(service.database_env, f"sqlite:///{service.name}-elsewhere.db")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for service in services.WORKERS:
        assert settings.task_queue(service.name) == f"tq-{service.name}"
        if service.owns_database:
            expected = f"sqlite:///{service.name}-elsewhere.db"
            assert settings.database_url(service.name) == expected


def test_defaults_are_the_service_name_and_a_file_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    for service in services.BUSINESS_SERVICES:
        assert settings.task_queue(service.name) == service.name
        assert settings.database_url(service.name) == f"sqlite:///{tmp_path / service.name}.db"


def test_the_lists_elsewhere_are_derived() -> None:
    assert SERVICES == services.BUSINESS_NAMES
    # The sagas' task-queue map has one queue per business service: the API fills it from
    # settings (api/order_gateway.py, task_queues), so a missing field fails at once.
    assert tuple(f.name for f in dataclasses.fields(TaskQueues)) == services.BUSINESS_NAMES
    # Metrics ports are base + 1 + the index of the role: new services go at the end.
    assert tuple(service.name for service in services.WORKERS) == ROLES


def test_the_banner_lists_every_worker_metrics_port() -> None:
    # temporal-dev/banner.py is stdlib only (it runs before the project can import), so it
    # spells the roles out: in the order of the metrics port offsets.
    banner = (REPO_ROOT / "temporal-dev" / "banner.py").read_text()
    [roles] = re.findall(r"^METRICS_ROLES = (\(.*\))$", banner, re.MULTILINE)
    assert ast.literal_eval(roles) == tuple(service.name for service in services.WORKERS)


def test_an_unknown_service_is_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="no service named 'warehouse'"):
        services.get("warehouse")
    assert importlib.util.find_spec("workers.warehouse") is None
