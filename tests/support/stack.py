"""Moved to tooling/stack.py (shared with the bench and the soak); a shim for old imports."""

from __future__ import annotations

from tooling.stack import REPO_ROOT, SERVICES, Stack, free_port, run_stack, wait_until_ready

__all__ = ["REPO_ROOT", "SERVICES", "Stack", "free_port", "run_stack", "wait_until_ready"]
