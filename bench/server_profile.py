"""Moved to tooling/server_profile.py (shared with the tests); a shim for old imports."""

from __future__ import annotations

from tooling.server_profile import PROFILE, profile_args

__all__ = ["PROFILE", "profile_args"]
