"""The payments database's revisions."""
