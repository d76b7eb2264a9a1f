"""`python -m workers.notifications`: the notifications service's worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio.client import Client

from activities.idempotency import activities_of
from activities.notifications import TABLES, NotificationActivities
from common.db import SessionFactory
from common.settings import Settings
from workers.runner import Runtime, main
from workers.service import build_service_worker


def build(client: Client, settings: Settings) -> Runtime:
    def activities(open_session: SessionFactory) -> list[Callable[..., Any]]:
        # Every activity the class defines (activities/idempotency.py, activities_of).
        return activities_of(NotificationActivities(open_session))

    return build_service_worker(
        client, settings, service="notifications", tables=TABLES, activities=activities
    )


if __name__ == "__main__":
    main("notifications", build)
