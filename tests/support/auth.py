"""Moved to tooling/auth.py (shared with the bench); this shim keeps old imports working."""

from __future__ import annotations

from tooling.auth import (
    STACK_OPERATOR_SCOPE,
    bearer,
    gateway_settings,
    issue_key,
    order_id_for_key,
)

__all__ = ["STACK_OPERATOR_SCOPE", "bearer", "gateway_settings", "issue_key", "order_id_for_key"]
