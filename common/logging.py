"""Process-wide logging: readable text by default, one JSON object per line on request.

`SAGAWORKS_LOG_FORMAT=json` (ARCHITECTURE.md, Observability) renders every record: ours, the
SDK's, uvicorn's
and Temporal core's (forwarded by the worker runtime, common/telemetry.py), through
structlog's `ProcessorFormatter` as one JSON object per line with `time`, `level`, `role`,
`logger` and `message`, and, where known, `order_id`, `workflow_id`, `run_id`,
`activity_type`, `trace_id` and `span_id`.

The IDs come from where they already are: the SDK's workflow and activity loggers put
the workflow's details in each record's `temporal_workflow` / `temporal_activity` extra;
the API binds the order of the request path as a context variable; OpenTelemetry knows
the current span. No other `extra` is copied, so a record cannot carry a payload into the
log by accident (card tokens and addresses never appear: a test scans a full run).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any

import structlog
from opentelemetry import trace
from temporalio import activity, workflow

from common.settings import Settings

ORDER_PREFIX = "order-"
# uvicorn configures these itself (its own handlers, no propagation); JSON takes them over.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
_HANDLER_MARK = "_sagaworks_handler"

EventDict = MutableMapping[str, Any]


def configure_logging(role: str, settings: Settings) -> None:
    """Send every record of this process through one handler on the root logger."""
    json = settings.log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter(role) if json else text_formatter(role))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    # Replace only our own handler: a test runner's capture handlers stay in place.
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    if not json:
        return
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The IDs are fields now; the SDK need not repeat its dict at the end of each message.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    logging.captureWarnings(True)
    # structlog's own loggers, should a module use one, end in the same handler.
    structlog.configure(
        processors=[
            *_shared_processors(role),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def text_formatter(role: str) -> logging.Formatter:
    return logging.Formatter(f"%(asctime)s {role} %(levelname)s %(message)s")


def json_formatter(role: str) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(role),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _event_to_message,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def _shared_processors(role: str) -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _RoleAdder(role),
        add_temporal_ids,
        add_trace_ids,
    ]


class _RoleAdder:
    def __init__(self, role: str) -> None:
        self._role = role

    def __call__(self, logger: Any, method: str, event: EventDict) -> EventDict:
        event["role"] = self._role
        return event


def add_temporal_ids(logger: Any, method: str, event: EventDict) -> EventDict:
    """Workflow and activity context from the SDK's loggers' `extra`."""
    record = event.get("_record")
    details: Mapping[str, Any] = {
        **(getattr(record, "temporal_workflow", None) or {}),
        **(getattr(record, "temporal_activity", None) or {}),
    }
    workflow_id = details.get("workflow_id")
    if workflow_id:
        event.setdefault("workflow_id", workflow_id)
        if str(workflow_id).startswith(ORDER_PREFIX):
            event.setdefault("order_id", workflow_id)  # a checkout saga's ID is its order's
    for key, name in (
        ("run_id", "run_id"),
        ("workflow_run_id", "run_id"),
        ("workflow_type", "workflow_type"),
        ("activity_type", "activity_type"),
    ):
        if details.get(key):
            event.setdefault(name, details[key])
    for key in ("order_id", "workflow_id"):  # logged on purpose: extra={"order_id": ...}
        value = getattr(record, key, None)
        if value:
            event.setdefault(key, value)
    return event


def add_trace_ids(logger: Any, method: str, event: EventDict) -> EventDict:
    """The current OpenTelemetry span, if a tracer made one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def _event_to_message(logger: Any, method: str, event: EventDict) -> EventDict:
    event["message"] = event.pop("event", "")
    return event


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("sagaworks").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    logging.getLogger("sagaworks").critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
