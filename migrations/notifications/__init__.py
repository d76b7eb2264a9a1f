"""The notifications database's migration history."""
