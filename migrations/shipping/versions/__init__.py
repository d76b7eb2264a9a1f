"""The shipping database's revisions."""
