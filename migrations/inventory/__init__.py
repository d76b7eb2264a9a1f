"""The inventory database's migration history."""
