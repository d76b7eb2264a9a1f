"""The gateway database's revisions."""
