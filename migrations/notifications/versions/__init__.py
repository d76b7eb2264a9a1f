"""The notifications database's revisions."""
