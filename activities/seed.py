"""`python -m activities.seed`: create the inventory tables and seed the demo catalogue."""

from __future__ import annotations

from activities.inventory import TABLES, seed_catalogue
from common.db import create_tables, make_engine, session_factory
from common.settings import get_settings


def main() -> None:
    settings = get_settings()
    url = settings.database_url("inventory")
    engine = make_engine(url)
    create_tables(engine, TABLES)
    added = seed_catalogue(session_factory(engine))
    print(f"catalogue seeded into {url}: {added} product(s) added")


if __name__ == "__main__":
    main()
