"""The inventory database's revisions."""
