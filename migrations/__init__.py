"""One Alembic migration history per database: each service's and the gateway's."""
