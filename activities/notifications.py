"""Notifications service: order confirmations, in its own database.

An optional step (graceful degradation, ARCHITECTURE.md: The saga toolkit): when this
service is down or failing,
the saga records the step as skipped and completes anyway.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

from sqlmodel import Field, Session, SQLModel

from activities.idempotency import (
    IdempotencyRecord,
    current_attempt,
    run_once,
    service_activity,
    utcnow,
)
from common.db import SessionFactory
from workflows.models import SendConfirmationInput, SendConfirmationResult


class Notification(SQLModel, table=True):
    __tablename__ = "notifications_notification"

    id: str = Field(primary_key=True, default_factory=lambda: f"ntf-{uuid.uuid4().hex[:12]}")
    notification_key: str = Field(unique=True, max_length=300)
    order_id: str = Field(index=True, max_length=200)
    customer_id: str = Field(max_length=200)
    body: str = ""
    created_at: datetime = Field(default_factory=utcnow)


TABLES = [Notification, IdempotencyRecord]


class NotificationActivities:
    def __init__(self, open_session: SessionFactory) -> None:
        self._open_session = open_session

    @service_activity("send_confirmation")
    def send_confirmation(self, input: SendConfirmationInput) -> SendConfirmationResult:
        def send(session: Session) -> SendConfirmationResult:
            notification = Notification(
                notification_key=input.idempotency_key,
                order_id=input.order_id,
                customer_id=input.customer_id,
                body=f"Order {input.order_id} is on its way (tracking {input.tracking_number}).",
            )
            session.add(notification)
            return SendConfirmationResult(notification_id=notification.id)

        result = run_once(
            self._open_session,
            input.idempotency_key,
            "send_confirmation",
            SendConfirmationResult,
            send,
        )
        return dataclasses.replace(result, attempt=current_attempt())
