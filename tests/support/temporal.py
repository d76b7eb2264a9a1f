"""Moved to tooling/temporal.py (shared with the bench); this shim keeps old imports working."""

from __future__ import annotations

from tooling.temporal import SEARCH_ATTRIBUTES, dev_server_env, time_skipping_env

__all__ = ["SEARCH_ATTRIBUTES", "dev_server_env", "time_skipping_env"]
