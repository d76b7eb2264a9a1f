"""`python -m tests.migrations.race <database> <url> <ready file> <go file>`: one racer.

Imports and connects first, says it is ready, then waits for the go file, so that every
racer starts its migration within milliseconds of the others (a process's start-up alone
takes longer than a migration, which would let them run one after another by luck).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common import migrate
from common.db import make_engine
from migrations.support import database_tables


def main() -> None:
    database, url, ready, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    database_tables(database)  # the models imported, as env.py will want them
    migrate.head_revision(database)
    engine = make_engine(url)
    with engine.connect():
        pass  # the pool holds a live connection: no connect cost after the go
    ready.touch()
    deadline = time.monotonic() + 60
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit("no go within 60 s")
        time.sleep(0.002)
    migrate.upgrade(database, engine)
    engine.dispose()


if __name__ == "__main__":
    main()
