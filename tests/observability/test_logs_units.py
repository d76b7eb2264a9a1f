"""JSON logs in one process: one object per line, the IDs pulled from where they already are."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from temporalio import activity, workflow

from common.logging import UVICORN_LOGGERS, configure_logging, json_formatter, text_formatter
from common.settings import Settings

ORDER = "order-0123456789abcdef0123456789abcdef"


def render(record: logging.LogRecord, role: str = "payments") -> dict[str, Any]:
    line = json_formatter(role).format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord(
        {"name": "sagaworks.test", "levelno": logging.INFO, "levelname": "INFO"}
    )
    made.msg, made.args = message, args
    made.__dict__.update(extra)
    return made


def test_a_line_has_time_level_role_logger_and_message() -> None:
    got = render(record("reserved %d items", 3))
    assert got["message"] == "reserved 3 items"
    assert got["level"] == "info"
    assert got["role"] == "payments"
    assert got["logger"] == "sagaworks.test"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", got["time"])
    assert "order_id" not in got and "trace_id" not in got


def test_the_sdk_activity_logger_context_gives_the_order_and_workflow() -> None:
    details = {
        "activity_id": "3",
        "activity_type": "authorize_payment",
        "attempt": 1,
        "workflow_id": ORDER,
        "workflow_run_id": "run-1",
        "workflow_type": "OrderWorkflow",
    }
    got = render(record("charging", temporal_activity=details))
    assert got["order_id"] == ORDER
    assert got["workflow_id"] == ORDER
    assert got["run_id"] == "run-1"
    assert got["activity_type"] == "authorize_payment"


def test_a_workflow_that_is_not_an_order_has_no_order_id() -> None:
    details = {"workflow_id": "sagaworks-coordinator", "run_id": "r", "workflow_type": "X"}
    got = render(record("operator action trip", temporal_workflow=details))
    assert got["workflow_id"] == "sagaworks-coordinator"
    assert "order_id" not in got


def test_the_current_span_gives_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("step") as span:
        got = render(record("inside a span"))
        context = span.get_span_context()
    assert got["trace_id"] == format(context.trace_id, "032x")
    assert got["span_id"] == format(context.span_id, "016x")


def test_bound_context_variables_such_as_the_request_order_are_merged() -> None:
    with structlog.contextvars.bound_contextvars(order_id=ORDER):
        got = render(record("GET /orders/…"))
    assert got["order_id"] == ORDER


def test_other_extras_are_not_copied_so_payloads_cannot_leak_through_them() -> None:
    got = render(record("started", order_input={"card_token": "tok_secret"}))
    assert "tok_secret" not in json.dumps(got)


def test_an_exception_stays_inside_its_one_line() -> None:
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        made = record("failed")
        made.exc_info = sys.exc_info()
    got = render(made)
    assert "ValueError: broken" in got["exception"]


def test_text_format_is_the_readable_default() -> None:
    line = text_formatter("orders").format(record("worker polling"))
    assert line.endswith(" orders INFO worker polling")


@pytest.fixture
def root_logging() -> Iterator[io.StringIO]:
    """configure_logging on the real root logger, undone afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn = [logging.getLogger(name) for name in UVICORN_LOGGERS]
    saved_uvicorn = [(list(logger.handlers), logger.propagate) for logger in uvicorn]
    hooks = (sys.excepthook, threading.excepthook)
    sdk = (workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message)
    yield io.StringIO()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for logger, (handlers, propagate) in zip(uvicorn, saved_uvicorn, strict=True):
        logger.handlers[:], logger.propagate = handlers, propagate
    sys.excepthook, threading.excepthook = hooks
    workflow.logger.workflow_info_on_message, activity.logger.activity_info_on_message = sdk
    logging.captureWarnings(False)
    structlog.reset_defaults()


def test_json_mode_takes_over_uvicorns_loggers_and_keeps_other_handlers(
    root_logging: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr", root_logging)
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    uvicorn = logging.getLogger("uvicorn.access")
    uvicorn.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn.propagate = False
    settings = Settings(log_format="json", log_level="INFO")
    configure_logging("api", settings)
    configure_logging("api", settings)  # again: still one handler of ours
    assert other in logging.getLogger().handlers
    uvicorn.warning('127.0.0.1:1 - "GET /healthz HTTP/1.1" 200')
    structlog.get_logger("sagaworks.native").warning("from structlog", order_id=ORDER)
    lines = [json.loads(line) for line in root_logging.getvalue().splitlines()]
    assert [(line["role"], line["message"]) for line in lines] == [
        ("api", '127.0.0.1:1 - "GET /healthz HTTP/1.1" 200'),
        ("api", "from structlog"),
    ]
    assert lines[1]["order_id"] == ORDER
