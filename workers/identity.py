"""How a worker process is named in the coordination state.

A report carries a key unique to its process, the role and the Temporal client's identity
(`pid@hostname`): the coordinator needs it to tell processes apart (per-process calls in
flight). What `GET /coordination` shows is the role and a counter (`payments-1`, in order
of first report), so the state names no host or process; an operator who needs them asks
with `?details=true`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from temporalio.client import Client

from workflows.coordination_models import CoordinationState


def report_key(role: str, client: Client) -> str:
    return f"{role} {client.identity}"


def public_state(state: CoordinationState) -> CoordinationState:
    """The state with each worker shown as `<role>-<n>` instead of its report key."""
    counters: Counter[str] = Counter()
    workers = []
    for seen in state.workers:
        role = seen.worker.split(" ", 1)[0]
        counters[role] += 1
        workers.append(dataclasses.replace(seen, worker=f"{role}-{counters[role]}"))
    return dataclasses.replace(state, workers=workers)
