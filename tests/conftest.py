"""Fixtures every test directory can share. Keep this generic: no Temporal, no services."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Callable[[str], str]:
    """A fresh SQLite file URL per name, in this test's own temporary directory."""

    def make(name: str) -> str:
        return f"sqlite:///{tmp_path / f'{name}.db'}"

    return make
