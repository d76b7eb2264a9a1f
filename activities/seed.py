"""`python -m activities.seed`: migrate the inventory database and seed the demo catalogue."""

from __future__ import annotations

from activities.inventory import seed_catalogue
from common import migrate
from common.db import make_engine, session_factory
from common.settings import get_settings


def main() -> None:
    settings = get_settings()
    url = settings.database_url("inventory")
    engine = make_engine(url)
    migrate.upgrade("inventory", engine)
    added = seed_catalogue(session_factory(engine))
    print(f"catalogue seeded into {url}: {added} product(s) added")


if __name__ == "__main__":
    main()
