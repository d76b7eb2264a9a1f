"""Run one Temporal worker until SIGINT or SIGTERM, then shut it down gracefully."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from temporalio.client import Client
from temporalio.worker import Worker

from common import tracing
from common.logging import configure_logging
from common.settings import Settings, get_settings
from common.telemetry import start_worker_telemetry
from common.temporal import connect_with_retry
from workers.agent import CoordinationAgent

log = logging.getLogger("sagaworks.worker")


@dataclass
class Runtime:
    """A worker (and any more the process serves) and, with coordination on, its agent."""

    worker: Worker
    agent: CoordinationAgent | None = None
    more_workers: list[Worker] = field(default_factory=list)


WorkerFactory = Callable[[Client, Settings], Worker | Runtime]


async def serve(name: str, build: WorkerFactory, settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tracing.configure(name, settings)  # before connecting: the client takes its interceptor
    # Its own runtime: the SDK's metrics and, with JSON logs, the core's lines as JSON too.
    client = await connect_with_retry(settings, runtime=start_worker_telemetry(name, settings))
    built = build(client, settings)
    runtime = built if isinstance(built, Runtime) else Runtime(built)
    workers = [runtime.worker, *runtime.more_workers]
    queues = ", ".join(repr(worker.task_queue) for worker in workers)
    log.info("%s worker polling %s at %s", name, queues, settings.temporal_address)
    run = asyncio.create_task(_run_all(workers))
    agent = asyncio.create_task(runtime.agent.run()) if runtime.agent else None
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([run, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not run.done():
        log.info("%s worker draining in-flight tasks", name)
        await asyncio.gather(*(worker.shutdown() for worker in workers))
    if agent is not None and runtime.agent is not None:
        agent.cancel()
        with suppress(asyncio.CancelledError):
            await agent
        await runtime.agent.flush()  # what the drained tasks did still reaches the coordinator
    with suppress(asyncio.CancelledError):
        await run  # re-raises a worker failure, so the process exits non-zero
    log.info("%s worker stopped", name)


async def _run_all(workers: list[Worker]) -> None:
    await asyncio.gather(*(worker.run() for worker in workers))


def main(name: str, build: WorkerFactory) -> None:
    code = 0
    try:
        settings = get_settings()
        configure_logging(name, settings)  # SAGAWORKS_LOG_FORMAT=json: one JSON per line
        asyncio.run(serve(name, build, settings))
    except Exception as err:  # a clear line, not a traceback, for a newcomer's terminal
        log.error("%s worker failed: %s", name, err)
        code = 1
    tracing.shutdown()  # os._exit below skips atexit: export the last spans now
    sys.stdout.flush()
    sys.stderr.flush()
    # Avoid the interpreter-exit abort in the Temporal core (sdk-python#300).
    os._exit(code)
