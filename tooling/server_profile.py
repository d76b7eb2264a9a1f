"""The tuned dev-server profile (temporal-dev/profile.args), for Python callers.

`make up` reads the same file through temporal-dev/start.sh, so the tests' dev servers,
the bench and the soak run on exactly the settings a developer's server runs on. The SQLite
pragmas are harmless on an in-memory server (it keeps no journal), so they go everywhere.
"""

from __future__ import annotations

from pathlib import Path

PROFILE = Path(__file__).resolve().parents[1] / "temporal-dev" / "profile.args"


def profile_args() -> list[str]:
    """The profile as `temporal server start-dev` arguments: flag, value, flag, value...

    Each line of the file that is neither blank nor a `#` comment is one flag and its value.
    """
    args: list[str] = []
    for raw in PROFILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            flag, value = line.split(maxsplit=1)
            args += [flag, value]
    return args
