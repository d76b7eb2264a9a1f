"""Moved to tooling/invariants.py (shared with the fault suite); a shim for old imports."""

from __future__ import annotations

from tooling.invariants import *  # noqa: F403
