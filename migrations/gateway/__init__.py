"""The gateway database's migration history."""
